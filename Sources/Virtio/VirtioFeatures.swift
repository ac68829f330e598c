/// Virtio feature bits (VIRTIO 1.2 §6 "Reserved Feature Bits" and §5.2.3 for the block device),
/// plus vhost's own bits that travel in the same 64-bit word.
public struct VirtioFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public init(bit: Int) { self.rawValue = 1 << UInt64(bit) }

    // virtio-blk device bits (§5.2.3).
    public static let blockSizeMax = VirtioFeatures(bit: 1)      // VIRTIO_BLK_F_SIZE_MAX
    public static let blockSegmentMax = VirtioFeatures(bit: 2)   // VIRTIO_BLK_F_SEG_MAX
    public static let blockGeometry = VirtioFeatures(bit: 4)     // VIRTIO_BLK_F_GEOMETRY
    public static let blockReadOnly = VirtioFeatures(bit: 5)     // VIRTIO_BLK_F_RO
    public static let blockBlockSize = VirtioFeatures(bit: 6)    // VIRTIO_BLK_F_BLK_SIZE
    public static let blockFlush = VirtioFeatures(bit: 9)        // VIRTIO_BLK_F_FLUSH
    public static let blockTopology = VirtioFeatures(bit: 10)    // VIRTIO_BLK_F_TOPOLOGY
    public static let blockConfigWCE = VirtioFeatures(bit: 11)   // VIRTIO_BLK_F_CONFIG_WCE
    public static let blockMultiQueue = VirtioFeatures(bit: 12)  // VIRTIO_BLK_F_MQ
    public static let blockDiscard = VirtioFeatures(bit: 13)     // VIRTIO_BLK_F_DISCARD
    public static let blockWriteZeroes = VirtioFeatures(bit: 14) // VIRTIO_BLK_F_WRITE_ZEROES

    // Transport and ring bits.
    public static let notifyOnEmpty = VirtioFeatures(bit: 24)    // VIRTIO_F_NOTIFY_ON_EMPTY
    /// VHOST_F_LOG_ALL: the frontend asks the backend to log every guest write (migration).
    public static let logAll = VirtioFeatures(bit: 26)
    public static let indirectDescriptors = VirtioFeatures(bit: 28) // VIRTIO_RING_F_INDIRECT_DESC
    public static let eventIndex = VirtioFeatures(bit: 29)       // VIRTIO_RING_F_EVENT_IDX
    /// VHOST_USER_F_PROTOCOL_FEATURES: the backend speaks protocol-feature negotiation.
    public static let protocolFeatures = VirtioFeatures(bit: 30)
    public static let version1 = VirtioFeatures(bit: 32)         // VIRTIO_F_VERSION_1

    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// Limits on what a driver may hand us, each with its reason (style rule 4).
public enum VirtioLimits {
    /// Largest queue size we accept: QEMU's maximum (`queue-size` ≤ 1024).
    public static let queueSizeMax: UInt16 = 1024
    /// Most segments one chain may have after following an indirect table. The spec forbids
    /// chains longer than the queue size; with one indirect table at the end of a direct chain
    /// that is at most twice the largest queue.
    public static let chainSegmentsMax = 2 * Int(queueSizeMax)
    /// Most entries in one indirect table (a table larger than the largest queue is hostile).
    public static let indirectEntriesMax = Int(queueSizeMax)
    /// Total bytes one chain may describe: the used-ring `len` field is 32 bits.
    public static let chainBytesMax: UInt64 = UInt64(UInt32.max)
}
