import GuestMemory
import LinuxSystem

/// Something the server shell must do for the session: the state machine decides, the shell
/// acts (style rule 9). Effects are applied in order, before the reply is sent.
public enum SessionEffect: Sendable {
    /// Start a data thread for a ring.
    case startVring(VringStart)
    /// Stop a ring's data thread, draining what it popped. Its final avail index answers
    /// GET_VRING_BASE.
    case stopVring(index: Int)
    /// Give every running data thread a new memory map / dirty log, and wait until they use it.
    case publishMemory(GuestMemoryMap, log: DirtyLog?)
    /// Swap a running ring's call eventfd (and signal the new one once, in case a completion
    /// was published while the frontend was changing it).
    case setCall(index: Int, EventNotifier?)
    /// Enable or disable a running ring.
    case setEnabled(index: Int, Bool)
    /// The first ring is about to start: the device takes what serving needs (a volume's
    /// lease). `afterHandoff`: this connection handed the device off before (a migration
    /// whose switchover happened, or seemed to) and is now restarting it.
    case activateDevice(afterHandoff: Bool)
    /// The last running ring stopped (GET_VRING_BASE, before the reply). `handoff`: migration
    /// logging was on, so this is the switchover: the device hands its state off.
    case deactivateDevice(handoff: Bool)
    /// Migration dirty logging turned on or off (LOG_ALL in SET_FEATURES).
    case migrationLogging(Bool)
}

/// How the session answers one message.
public enum SessionReply: Sendable, Equatable {
    /// Nothing (unless NEED_REPLY asked for an ack).
    case none
    /// A u64 reply (GET_FEATURES, GET_QUEUE_NUM, ...).
    case u64(UInt64)
    /// Raw reply bytes (header included), with fds to attach.
    case bytes([UInt8], fds: [CInt])
    /// The GET_VRING_BASE reply: the ring's final avail index, known once the ring stopped.
    case vringBase(index: Int)
}

/// The outcome of one message.
public struct SessionOutcome: Sendable {
    public var effects: [SessionEffect] = []
    public var reply: SessionReply = .none
    /// An inflight region fd the session created for GET_INFLIGHT_FD (sent with the reply; the
    /// frontend owns it afterwards, we keep our mapping).
    public init() {}
}
