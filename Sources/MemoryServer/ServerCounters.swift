import RemoteMem
import Synchronization

/// A server's running totals for SERVER_STAT and the metrics endpoint: connections, requests
/// (in all and per opcode) and bytes on the wire, headers included. Lock-free (relaxed atomics:
/// each number is a statistic, not a synchronisation point).
public final class ServerCounters: Sendable {
    /// One relaxed counter (a class, because `Atomic` cannot live in an array).
    final class Counter: Sendable {
        let value = Atomic<UInt64>(0)
        func add(_ n: UInt64) { value.wrappingAdd(n, ordering: .relaxed) }
        var current: UInt64 { value.load(ordering: .relaxed) }
    }

    /// Every opcode of protocol version 1, in code order.
    public static let allOpcodes: [Opcode] = [.hello, .ping, .serverStat, .serverDrain, .auth, .dedupStat, .volumeCreate, .volumeOpen,
                                              .volumeClose, .volumeDelete, .volumeStat, .volumeList, .metadataPut, .hotPagesPut,
                                              .hotPagesGet, .volumeClone, .read, .write, .trim, .volumeDedupStat]

    private let connections = Atomic<Int>(0)
    private let requests = Counter()
    private let received = Counter()
    private let sent = Counter()
    private let authFailures = Counter()
    /// Requests per opcode in `allOpcodes` order; the extra last one counts unknown opcodes.
    private let perOpcode: [Counter]

    public init() {
        perOpcode = (0...Self.allOpcodes.count).map { _ in Counter() }
    }

    /// Open client connections.
    public var connectionsOpen: Int { connections.load(ordering: .relaxed) }
    /// Requests answered since the server started.
    public var requestsServed: UInt64 { requests.current }
    /// Request bytes received, headers included.
    public var bytesReceived: UInt64 { received.current }
    /// Reply bytes sent, headers included.
    public var bytesSent: UInt64 { sent.current }
    /// AUTH requests refused (`AUTH_FAILED`): clients with another key, or replayed proofs.
    public var authenticationFailures: UInt64 { authFailures.current }

    /// Requests seen with `opcode` (nil: unknown opcodes).
    public func requests(for opcode: Opcode?) -> UInt64 { perOpcode[Self.slot(for: opcode)].current }

    func connectionOpened() { connections.wrappingAdd(1, ordering: .relaxed) }
    func connectionClosed() { connections.wrappingSubtract(1, ordering: .relaxed) }

    /// Counts one request of `requestBytes` (header included) with `opcode`.
    func recordRequest(_ opcode: Opcode?, requestBytes: Int) {
        requests.add(1)
        received.add(UInt64(requestBytes))
        perOpcode[Self.slot(for: opcode)].add(1)
    }

    /// Counts one refused AUTH.
    func recordAuthenticationFailure() { authFailures.add(1) }

    /// Counts one reply of `replyBytes` (header included).
    func recordReply(replyBytes: Int) { sent.add(UInt64(replyBytes)) }

    private static func slot(for opcode: Opcode?) -> Int {
        guard let opcode, let index = allOpcodes.firstIndex(of: opcode) else { return allOpcodes.count }
        return index
    }
}
