import GuestMemory

/// `struct vhost_vring_state`: a queue index and a number (size, base, enable).
public struct VringState: Equatable, Sendable {
    public static let sizeBytes = 8
    public var index: UInt32
    public var num: UInt32
    public init(index: UInt32, num: UInt32) { self.index = index; self.num = num }
}

/// `struct vhost_vring_addr` (40 bytes): ring addresses in the frontend's virtual address
/// space, and the guest-physical address of the used ring for dirty logging.
public struct VringAddress: Equatable, Sendable {
    public static let sizeBytes = 40
    /// VHOST_VRING_F_LOG: log writes to the used ring.
    public static let flagLog: UInt32 = 1
    public var index: UInt32
    public var flags: UInt32
    public var descriptorTable: FrontendAddress
    public var usedRing: FrontendAddress
    public var availRing: FrontendAddress
    public var logGuestAddress: GuestAddress
    public init(index: UInt32, flags: UInt32, descriptorTable: FrontendAddress, usedRing: FrontendAddress,
                availRing: FrontendAddress, logGuestAddress: GuestAddress) {
        self.index = index
        self.flags = flags
        self.descriptorTable = descriptorTable
        self.usedRing = usedRing
        self.availRing = availRing
        self.logGuestAddress = logGuestAddress
    }
}

/// The u64 of SET_VRING_KICK/CALL/ERR: queue index in bits 0–7, bit 8 = no fd attached.
public struct VringDescriptorPayload: Equatable, Sendable {
    public static let noFileDescriptorFlag: UInt64 = 0x100
    public var index: UInt32
    public var hasFileDescriptor: Bool
    public init(index: UInt32, hasFileDescriptor: Bool) {
        self.index = index
        self.hasFileDescriptor = hasFileDescriptor
    }
    public init(_ raw: UInt64) {
        index = UInt32(raw & 0xff)
        hasFileDescriptor = raw & Self.noFileDescriptorFlag == 0
    }
    public var rawValue: UInt64 { UInt64(index) | (hasFileDescriptor ? 0 : Self.noFileDescriptorFlag) }
}

/// SET_LOG_BASE: `mmap_size u64, mmap_offset u64` of the log memfd.
public struct LogArea: Equatable, Sendable {
    public static let sizeBytes = 16
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public init(mmapSize: UInt64, mmapOffset: UInt64) { self.mmapSize = mmapSize; self.mmapOffset = mmapOffset }
}

/// GET/SET_CONFIG: `offset u32, size u32, flags u32, bytes[size]`.
public struct ConfigAccess: Equatable, Sendable {
    public static let headerBytes = 12
    public var offset: UInt32
    public var size: UInt32
    public var flags: UInt32
    public var bytes: [UInt8]
    public init(offset: UInt32, size: UInt32, flags: UInt32, bytes: [UInt8]) {
        self.offset = offset
        self.size = size
        self.flags = flags
        self.bytes = bytes
    }
}

/// GET/SET_INFLIGHT_FD: `mmap_size u64, mmap_offset u64, num_queues u16, queue_size u16` plus 4
/// bytes of padding: 24 bytes, the size QEMU checks replies against.
public struct InflightArea: Equatable, Sendable {
    public static let sizeBytes = 24
    public var mmapSize: UInt64
    public var mmapOffset: UInt64
    public var queueCount: UInt16
    public var queueSize: UInt16
    public init(mmapSize: UInt64, mmapOffset: UInt64, queueCount: UInt16, queueSize: UInt16) {
        self.mmapSize = mmapSize
        self.mmapOffset = mmapOffset
        self.queueCount = queueCount
        self.queueSize = queueSize
    }
}
