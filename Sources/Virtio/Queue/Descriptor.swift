/// One 16-byte split-ring descriptor (VIRTIO 1.2 §2.7.5): `addr u64, len u32, flags u16, next u16`.
public struct Descriptor: Equatable, Sendable {
    public static let sizeBytes = 16
    public static let flagNext: UInt16 = 1      // VIRTQ_DESC_F_NEXT
    public static let flagWrite: UInt16 = 2     // VIRTQ_DESC_F_WRITE
    public static let flagIndirect: UInt16 = 4  // VIRTQ_DESC_F_INDIRECT

    public var address: UInt64
    public var length: UInt32
    public var flags: UInt16
    public var next: UInt16

    @inlinable
    public init(address: UInt64, length: UInt32, flags: UInt16, next: UInt16) {
        self.address = address
        self.length = length
        self.flags = flags
        self.next = next
    }

    @inlinable public var hasNext: Bool { flags & Self.flagNext != 0 }
    @inlinable public var isWritable: Bool { flags & Self.flagWrite != 0 }
    @inlinable public var isIndirect: Bool { flags & Self.flagIndirect != 0 }
}

/// A piece of a request's buffers in guest memory, already checked to be guest RAM.
public struct ChainSegment: Equatable, Sendable {
    public var address: UInt64
    public var length: UInt32
    public var isWritable: Bool

    @inlinable
    public init(address: UInt64, length: UInt32, isWritable: Bool) {
        self.address = address
        self.length = length
        self.isWritable = isWritable
    }
}
