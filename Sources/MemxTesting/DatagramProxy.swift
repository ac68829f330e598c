import Glibc
import LinuxSystem
import Synchronization

/// A UDP proxy in front of one memory server that drops, duplicates, reorders and delays
/// datagrams at seeded rates, both ways, for the UDP transport's tests. Each client address
/// gets its own upstream socket (so the server sees one peer per client, as without the
/// proxy). `blackhole` drops everything (a partition or a dead server).
public final class DatagramProxy: @unchecked Sendable {
    // SAFETY: sockets are thread-safe; `state` (generator, upstreams, delay queue, counts) is
    // behind a Mutex; threads are joined in `stop`.

    /// Fault rates, each a probability per datagram.
    public struct Faults: Sendable {
        public var drop: Double
        public var duplicate: Double
        /// Held back by a random 0…`reorderMaxMicros` (so later datagrams overtake it).
        public var reorder: Double
        public var reorderMaxMicros: Int
        /// Added to every datagram.
        public var delayMicros: Int
        public init(drop: Double = 0, duplicate: Double = 0, reorder: Double = 0, reorderMaxMicros: Int = 2000,
                    delayMicros: Int = 0) {
            self.drop = drop
            self.duplicate = duplicate
            self.reorder = reorder
            self.reorderMaxMicros = reorderMaxMicros
            self.delayMicros = delayMicros
        }
    }

    /// What the proxy did, for a test's assertions and messages.
    public struct Counts: Sendable, CustomStringConvertible {
        public var forwarded = 0, dropped = 0, duplicated = 0, reordered = 0
        public var description: String { "forwarded \(forwarded), dropped \(dropped), duplicated \(duplicated), reordered \(reordered)" }
    }

    private struct Delayed {
        var due: UInt64
        var bytes: [UInt8]
        var socket: UDPSocket
        var peer: DatagramPeer?
    }

    private struct State {
        var random: SeededRandom
        var faults: Faults
        var blackhole = false
        var upstreams: [DatagramPeer: UDPSocket] = [:]
        var delayed: [Delayed] = []
        var counts = Counts()
        var stopped = false
    }

    public let port: UInt16
    public var address: TCPAddress { TCPAddress(host: "127.0.0.1", port: port) }
    private let target: TCPAddress
    private let front: UDPSocket
    private let state: Mutex<State>
    private let threads = Mutex<[OSThread]>([])

    public init(target: TCPAddress, seed: UInt64, faults: Faults, listenPort: UInt16 = 0) throws {
        self.target = target
        front = try UDPSocket(binding: TCPAddress(host: "127.0.0.1", port: listenPort))
        try front.setReceiveTimeout(millis: 100)
        port = front.port
        state = Mutex(State(random: SeededRandom(seed: seed), faults: faults))
        let frontThread = try OSThread(name: "udp-proxy-in") { [self] in pumpFromClients() }
        let delayThread = try OSThread(name: "udp-proxy-delay") { [self] in pumpDelayed() }
        threads.withLock { $0 += [frontThread, delayThread] }
    }

    deinit { stop() }

    public var counts: Counts { state.withLock { $0.counts } }

    public func setFaults(_ faults: Faults) { state.withLock { $0.faults = faults } }

    /// Drop every datagram (true) or forward again (false).
    public func setBlackhole(_ on: Bool) { state.withLock { $0.blackhole = on } }

    public func stop() {
        let sockets = state.withLock { state -> [UDPSocket] in
            state.stopped = true
            return Array(state.upstreams.values)
        }
        front.shutdown()
        for socket in sockets { socket.shutdown() }
        for thread in threads.withLock({ threads in defer { threads = [] }; return threads }) { thread.join() }
    }

    private var stopped: Bool { state.withLock { $0.stopped } }

    private func pumpFromClients() {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !stopped {
            guard let (count, peer) = try? buffer.withUnsafeMutableBytes({ try front.receive(into: $0) }), count > 0 else { continue }
            let upstream: UDPSocket? = state.withLock { state in
                if let socket = state.upstreams[peer] { return socket }
                guard let socket = try? UDPSocket(connectingTo: target) else { return nil }
                try? socket.setReceiveTimeout(millis: 100)
                state.upstreams[peer] = socket
                if let thread = try? OSThread(name: "udp-proxy-out", { [self] in pumpFromServer(socket, to: peer) }) {
                    threads.withLock { $0.append(thread) }
                }
                return socket
            }
            if let upstream { forward(Array(buffer[..<count]), on: upstream, to: nil) }
        }
    }

    private func pumpFromServer(_ upstream: UDPSocket, to peer: DatagramPeer) {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while !stopped {
            guard let (count, _) = try? buffer.withUnsafeMutableBytes({ try upstream.receive(into: $0) }), count > 0 else { continue }
            forward(Array(buffer[..<count]), on: front, to: peer)
        }
    }

    /// Applies the faults to one datagram: drops it, or sends it (and maybe a copy) now or later.
    private func forward(_ bytes: [UInt8], on socket: UDPSocket, to peer: DatagramPeer?) {
        let now = Self.nowNanos()
        let sendNow: Int = state.withLock { state in
            if state.blackhole || Double.random(in: 0..<1, using: &state.random) < state.faults.drop {
                state.counts.dropped += 1
                return 0
            }
            let copies = Double.random(in: 0..<1, using: &state.random) < state.faults.duplicate ? 2 : 1
            if copies == 2 { state.counts.duplicated += 1 }
            var immediate = 0
            for _ in 0..<copies {
                var delay = UInt64(state.faults.delayMicros) * 1000
                if Double.random(in: 0..<1, using: &state.random) < state.faults.reorder {
                    delay += UInt64(Int.random(in: 1...max(1, state.faults.reorderMaxMicros), using: &state.random)) * 1000
                    state.counts.reordered += 1
                }
                state.counts.forwarded += 1
                if delay == 0 {
                    immediate += 1
                } else {
                    state.delayed.append(Delayed(due: now + delay, bytes: bytes, socket: socket, peer: peer))
                }
            }
            return immediate
        }
        for _ in 0..<sendNow { send(bytes, on: socket, to: peer) }
    }

    private func send(_ bytes: [UInt8], on socket: UDPSocket, to peer: DatagramPeer?) {
        bytes.withUnsafeBytes { try? socket.send($0, UnsafeRawBufferPointer(start: nil, count: 0), to: peer) }
    }

    private func pumpDelayed() {
        while !stopped {
            let now = Self.nowNanos()
            let due: [Delayed] = state.withLock { state in
                let ready = state.delayed.filter { $0.due <= now }
                state.delayed.removeAll { $0.due <= now }
                return ready
            }
            for item in due { send(item.bytes, on: item.socket, to: item.peer) }
            usleep(100)
        }
    }

    private static func nowNanos() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }
}
