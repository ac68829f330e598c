import GuestMemory
import Virtio

/// What a vhost-user device (virtio-blk here) tells the protocol layer, and how it serves
/// requests. The protocol layer owns sockets, rings and threads; the device owns the meaning of
/// a request. It never sees a socket or a message.
public protocol VhostUserDevice: AnyObject, Sendable {
    /// Device and transport feature bits to offer (GET_FEATURES adds the vhost-user bits).
    var features: VirtioFeatures { get }
    /// Queues the device supports (GET_QUEUE_NUM).
    var queueCountMax: Int { get }
    /// The current configuration space bytes (GET_CONFIG reads a window of them).
    func configSpace() -> [UInt8]
    /// A driver write to the configuration space (SET_CONFIG), or a description of why not.
    func writeConfig(offset: Int, bytes: [UInt8]) -> String?
    /// A handler for queue `index`, used only by that queue's data thread.
    func makeRequestHandler(queueIndex: Int) -> any VirtqueueRequestHandler

    // Lifecycle (research/vhost-user.md §5; default: nothing to do). Called on the control
    // thread, in protocol order; QEMU waits for the message being handled meanwhile.

    /// Before the first queue starts (no handler exists yet). `afterHandoff`: this frontend
    /// handed the device off at a migration switchover and is now restarting it here (the
    /// migration failed, or the VM was resumed on this host anyway).
    func activate(afterHandoff: Bool)
    /// After the last queue stopped and drained, before GET_VRING_BASE is answered.
    /// `handoff`: migration logging is on, so another backend is about to take over.
    func deactivate(handoff: Bool)
    /// Migration started (dirty logging on) or ended without a switchover (off).
    func migrationLoggingChanged(_ on: Bool)
}

extension VhostUserDevice {
    public func activate(afterHandoff: Bool) {}
    public func deactivate(handoff: Bool) {}
    public func migrationLoggingChanged(_ on: Bool) {}
}

/// Serves the requests of one queue, on that queue's thread only.
///
/// A handler may keep requests in flight (a read waiting for a memory server) and complete them
/// later, in any order: `start` returns nil for such a request, and the queue thread collects it
/// through `completeFinished`. The thread sleeps on `completionFD` as well as the kick while any
/// are in flight, and waits for all of them before it applies a control change or stops. A
/// handler that never leaves a request in flight implements only `handle` and `queueStopped`.
public protocol VirtqueueRequestHandler: AnyObject {
    /// Handles one request whose buffers are `chain`, writing guest memory only through
    /// `writer`, and returns the used-ring length (bytes written into device-writable buffers).
    func handle(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32
    /// Like `handle`, but may leave the request (ring entry `head`) in flight and return nil.
    /// `chain` is valid only during the call.
    func start(_ chain: DescriptorChain, head: UInt16, writer: GuestMemoryWriter) -> UInt32?
    /// Requests started and not yet returned by `completeFinished`.
    var inFlightCount: Int { get }
    /// True if some request in flight may have finished (cheap: the busy-poll loop asks).
    var hasFinished: Bool { get }
    /// Completes the requests that finished, calling `complete(head, usedLength)` for each;
    /// with `waitForAll`, first waits until every request in flight has finished.
    func completeFinished(writer: GuestMemoryWriter, waitForAll: Bool, _ complete: (UInt16, UInt32) -> Void)
    /// Readable when a request may have finished, once `armCompletion` returned true.
    var completionFD: CInt? { get }
    /// Prepares to sleep on `completionFD`; false if something finished meanwhile (do not sleep).
    func armCompletion() -> Bool
    /// After waking.
    func disarmCompletion()
    /// Called when the queue stops (GET_VRING_BASE) after its last request completed, so the
    /// device can make completed writes durable before the frontend is told the queue is idle.
    func queueStopped()
}

/// Handlers that complete every request inside `handle`.
extension VirtqueueRequestHandler {
    public func start(_ chain: DescriptorChain, head: UInt16, writer: GuestMemoryWriter) -> UInt32? {
        handle(chain, writer: writer)
    }
    public var inFlightCount: Int { 0 }
    public var hasFinished: Bool { false }
    public func completeFinished(writer: GuestMemoryWriter, waitForAll: Bool, _ complete: (UInt16, UInt32) -> Void) {}
    public var completionFD: CInt? { nil }
    public func armCompletion() -> Bool { true }
    public func disarmCompletion() {}
}
