import Glibc
import LinuxSystem
import Synchronization

/// A TCP proxy in front of one memory server, for fault injection in tests: it forwards bytes
/// both ways until told to black-hole them (stop forwarding but keep every connection open: a
/// network partition, which the client only notices by its timeouts) or to cut (reset every
/// connection and refuse new ones: a link that is gone). `pass` heals it.
public final class FaultyProxy: @unchecked Sendable {
    // SAFETY: `listener` is immutable after init; mode and sockets live in the Mutex; each
    // pump thread owns its pair of descriptors until it closes them.
    public enum Mode: Sendable { case pass, blackhole, cut }

    public let port: UInt16
    public var address: TCPAddress { TCPAddress(host: "127.0.0.1", port: port) }
    private let target: TCPAddress
    private let listener: CInt
    private let state = Mutex<(mode: Mode, sockets: [CInt], stopped: Bool)>((.pass, [], false))
    private let threads = Mutex<[OSThread]>([])

    public init(target: TCPAddress) throws {
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Errno.current }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, listen(fd, 16) == 0 else {
            close(fd)
            throw Errno.current
        }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        listener = fd
        port = UInt16(bigEndian: address.sin_port)
        let thread = try OSThread(name: "faulty-proxy") { [self] in acceptLoop() }
        threads.withLock { $0.append(thread) }
    }

    deinit { stop() }

    /// Changes what happens to traffic from now on.
    public func set(_ mode: Mode) {
        let toCut = state.withLock { state -> [CInt] in
            state.mode = mode
            return mode == .cut ? state.sockets : []
        }
        for fd in toCut { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }

    /// Closes everything and joins the threads. Idempotent.
    public func stop() {
        let sockets = state.withLock { state -> [CInt]? in
            guard !state.stopped else { return nil }
            state.stopped = true
            return state.sockets
        }
        guard let sockets else { return }
        _ = shutdown(listener, Int32(SHUT_RDWR))
        for fd in sockets { _ = shutdown(fd, Int32(SHUT_RDWR)) }
        for thread in threads.withLock({ $0 }) { thread.join() }
        for fd in sockets { close(fd) }
        close(listener)
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            let (mode, stopped) = state.withLock { ($0.mode, $0.stopped) }
            guard !stopped, mode != .cut, let server = try? TCPConnection(connectingTo: target, timeoutMillis: 1000) else {
                close(client)
                if stopped { return }
                continue
            }
            let serverFD = server.descriptor.rawValue
            let upstream = dup(serverFD)  // the TCPConnection closes its own when it goes
            _ = consume server
            state.withLock { $0.sockets += [client, upstream] }
            for (from, to) in [(client, upstream), (upstream, client)] {
                if let thread = try? OSThread(name: "faulty-pump", { [self] in pump(from: from, to: to) }) {
                    threads.withLock { $0.append(thread) }
                }
            }
        }
    }

    /// Copies `from` → `to` while passing; holds bytes back while black-holing; stops at EOF,
    /// an error, a cut or `stop()`.
    private func pump(from: CInt, to: CInt) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        defer { _ = shutdown(to, Int32(SHUT_RDWR)) }
        while true {
            var descriptor = pollfd(fd: from, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 10)
            if ready < 0 && errno != EINTR { return }
            // The mode is read after the wait, right before forwarding: bytes that arrive after
            // `set(.blackhole)` returned are never forwarded.
            let (mode, stopped) = state.withLock { ($0.mode, $0.stopped) }
            if stopped || mode == .cut { return }
            guard ready > 0, mode == .pass else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(from, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return }
            var sent = 0
            while sent < n {
                let m = buffer.withUnsafeBytes { send(to, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                if m <= 0 { return }
                sent += m
            }
        }
    }
}
