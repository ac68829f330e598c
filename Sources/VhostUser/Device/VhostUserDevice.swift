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
}

/// Serves the requests of one queue, on that queue's thread only.
public protocol VirtqueueRequestHandler: AnyObject {
    /// Handles one request whose buffers are `chain`, writing guest memory only through
    /// `writer`, and returns the used-ring length (bytes written into device-writable buffers).
    func handle(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32
    /// Called when the queue stops (GET_VRING_BASE) after its last request completed, so the
    /// device can make completed writes durable before the frontend is told the queue is idle.
    func queueStopped()
}
