import LinuxSystem
import RemoteMem
import Synchronization

/// Runs one query against every server at once, a thread and a `ControlClient` per server, so
/// unreachable servers cost one timeout in total rather than one each.
enum Fanout {
    /// How each connection is made: the timeout and the cluster key (--timeout, --key-file).
    struct Connection: Sendable {
        var timeoutMillis: Int
        var clusterKey: ClusterKey?
    }

    /// Connects to each of `servers` (HELLO and AUTH included) and runs `query` on the
    /// connection; returns each server's result in the order of `servers`.
    static func run<T: Sendable>(_ servers: [TCPAddress], _ connection: Connection,
                                 _ query: @escaping @Sendable (ControlClient) throws(ControlError) -> T)
        -> [Result<T, ControlError>] {
        let results = Results<T>(count: servers.count)
        var threads: [OSThread] = []
        for (index, server) in servers.enumerated() {
            let work: @Sendable () -> Void = {
                let result: Result<T, ControlError>
                do throws(ControlError) {
                    let client = try ControlClient(connectingTo: server, timeoutMillis: connection.timeoutMillis,
                                                   clusterKey: connection.clusterKey)
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

    /// Throws a `CommandFailure` (exit status 1) naming every server whose cluster-key handshake
    /// failed. Commands that report unreachable servers and still exit 0 (servers, list, stat)
    /// call it after their output: a wrong or missing key is a configuration error to fix, not
    /// an outage to tolerate.
    static func requireAuthenticated<T>(_ results: [Result<T, ControlError>]) throws(CommandFailure) {
        let failures = results.compactMap { result -> ControlError? in
            guard case .failure(let error) = result, case .authenticationFailed = error else { return nil }
            return error
        }
        guard !failures.isEmpty else { return }
        throw CommandFailure(failures.map(\.description).joined(separator: "; "))
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
