/// How a `BlockQueueClient` lays out requests and waits for completions.
///
/// The defaults suit tests. They use direct chains (header, data and status as separate
/// descriptors) and wait on the call eventfd, so a backend that forgets to notify is caught.
/// memx-bench switches to `.indirect` and `.pollUsedRing`. That is what a Linux guest's
/// virtio-blk driver does with INDIRECT_DESC (one ring slot per request), and polling gives
/// the lowest latency.
public struct BlockQueueOptions: Sendable {
    /// How a request's buffers are described.
    public enum DescriptorLayout: Sendable {
        /// A chain of ring descriptors: header, data segment(s), status.
        case direct
        /// One ring descriptor pointing at an indirect table in the slot's metadata. This
        /// needs VIRTIO_RING_F_INDIRECT_DESC.
        case indirect
    }

    /// How `waitForCompletions` waits.
    public enum CompletionWait: Sendable {
        /// Sleep in `poll(2)` on the call eventfd. The driver asks for an interrupt on every
        /// completion (EVENT_IDX `used_event`, or no NO_INTERRUPT flag).
        case callNotifier
        /// Spin on `used->idx`, as a polling guest does. Interrupts are suppressed (NO_INTERRUPT,
        /// or `used_event` kept half a ring-index space ahead) so the backend can skip its
        /// eventfd writes.
        case pollUsedRing
    }

    /// Request slots (the most requests in flight at once). nil means one per ring entry.
    public var slotCount: Int?
    /// The data buffer of each slot. This is the largest read or write it can carry.
    public var dataBytesPerSlot: Int = 128 * 1024
    /// Splits each data buffer into segments of at most this many bytes. nil means one segment,
    /// or segments of the backend's `size_max` when SIZE_MAX was negotiated.
    public var dataSegmentBytes: Int?
    public var descriptorLayout: DescriptorLayout = .direct
    public var completionWait: CompletionWait = .callNotifier
    /// How long `waitForCompletions` and `perform` wait before throwing `completionTimeout`.
    public var requestTimeout: Duration = .seconds(5)

    public init() {}

    /// The largest data buffer per slot we allow (the used-ring length is 32 bits, and guest
    /// RAM is finite).
    public static let dataBytesPerSlotMax = 16 * 1024 * 1024
}
