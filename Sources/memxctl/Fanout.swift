import LinuxSystem
import RemoteMem
import Synchronization

/// Runs one query against every server at once, a thread and a `ControlClient` per server, so
/// unreachable servers cost one timeout in total rather than one each.
enum Fanout {
    /// Connects to each of `servers` (HELLO included) and runs `query` on the connection;
    /// returns each server's result in the order of `servers`.
    static func run<T: Sendable>(_ servers: [TCPAddress], timeoutMillis: Int,
                                 _ query: @escaping @Sendable (ControlClient) throws(ControlError) -> T)
        -> [Result<T, ControlError>] {
        let results = Results<T>(count: servers.count)
        var threads: [OSThread] = []
        for (index, server) in servers.enumerated() {
            let work: @Sendable () -> Void = {
                let result: Result<T, ControlError>
                do throws(ControlError) {
                    let client = try ControlClient(connectingTo: server, timeoutMillis: timeoutMillis)
                    defer { client.close() }
                    result = .success(try query(client))
                } catch {
                    result = .failure(error)
                }
                results.set(index, result)
            }
            if servers.count == 1 {
                work()
            } else if let thread = try? OSThread(name: "memxctl-\(index)", work) {
                threads.append(thread)
            } else {
                work()  // no thread to be had: ask this server from this thread
            }
        }
        for thread in threads { thread.join() }
        return results.all()
    }

    /// The results being collected, one slot per server.
    private final class Results<T: Sendable>: Sendable {
        private let slots: Mutex<[Result<T, ControlError>?]>

        init(count: Int) { slots = Mutex(Array(repeating: nil, count: count)) }

        func set(_ index: Int, _ result: Result<T, ControlError>) { slots.withLock { $0[index] = result } }

        /// Every slot; call after every thread was joined.
        func all() -> [Result<T, ControlError>] { slots.withLock { $0.map { $0! } } }
    }
}
