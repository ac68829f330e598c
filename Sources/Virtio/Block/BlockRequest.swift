import GuestMemory

/// virtio-blk request types (VIRTIO 1.2 §5.2.6).
public enum BlockRequestType: UInt32, Sendable {
    case read = 0          // VIRTIO_BLK_T_IN
    case write = 1         // VIRTIO_BLK_T_OUT
    case flush = 4         // VIRTIO_BLK_T_FLUSH
    case getID = 8         // VIRTIO_BLK_T_GET_ID
    case discard = 11      // VIRTIO_BLK_T_DISCARD
    case writeZeroes = 13  // VIRTIO_BLK_T_WRITE_ZEROES
}

/// The status byte the device writes last (§5.2.6).
public enum BlockStatus: UInt8, Sendable {
    case ok = 0           // VIRTIO_BLK_S_OK
    case ioError = 1      // VIRTIO_BLK_S_IOERR
    case unsupported = 2  // VIRTIO_BLK_S_UNSUPP
}

/// A virtio-blk request, parsed once from its descriptor chain into plain values (style rule 3:
/// the header is copied out of guest memory, then validated; nothing re-reads it).
///
/// Layout: a 16-byte device-readable header `{type u32, ioprio u32, sector u64}`, then data
/// (device-readable for writes, discard and write-zeroes; device-writable for reads and GET_ID),
/// then one device-writable status byte. With VIRTIO_F_VERSION_1 (ANY_LAYOUT) the pieces may
/// share or split descriptors arbitrarily, so everything is addressed as offsets into the
/// chain's readable or writable bytes.
public struct BlockRequest: Equatable, Sendable {
    public static let headerBytes: UInt64 = 16
    /// The legacy barrier flag, masked off before dispatch (as QEMU does).
    static let legacyBarrier: UInt32 = 0x8000_0000

    /// The raw type field (after masking the legacy barrier bit); `type` is nil if unknown.
    public var rawType: UInt32
    public var type: BlockRequestType? { BlockRequestType(rawValue: rawType) }
    /// The first 512-byte sector (always 512-byte units, whatever blk_size is).
    public var sector: UInt64
    /// Where the data starts: an offset into the chain's readable bytes (write, discard,
    /// write-zeroes) or writable bytes (read, GET_ID).
    public var dataOffset: UInt64
    public var dataLength: UInt64
    /// The status byte: the chain's last writable byte.
    public var statusAddress: GuestAddress

    /// Parses `chain`. Throws `.noStatusByte` when the chain has no writable byte at all (the
    /// request cannot even be failed), `.malformed` (with the status address) otherwise.
    public static func parse(_ chain: DescriptorChain, memory: GuestMemoryMap) throws(BlockRequestError) -> BlockRequest {
        guard let statusAddress = chain.lastWritableByte else { throw .noStatusByte }
        guard chain.readableBytes >= headerBytes else {
            throw .malformed(statusAddress: statusAddress, reason: "header shorter than 16 bytes")
        }
        var header = (UInt32(0), UInt32(0), UInt64(0))
        do {
            try withUnsafeMutableBytes(of: &header) { (raw) throws(GuestMemoryError) in
                try chain.copyReadable(offset: 0, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<16]), memory: memory)
            }
        } catch {
            throw .malformed(statusAddress: statusAddress, reason: error.description)
        }
        let rawType = UInt32(littleEndian: header.0) & ~legacyBarrier
        let sector = UInt64(littleEndian: header.2)
        var request = BlockRequest(rawType: rawType, sector: sector, dataOffset: 0, dataLength: 0,
                                   statusAddress: statusAddress)
        switch BlockRequestType(rawValue: rawType) {
        case .read, .getID:
            request.dataLength = chain.writableBytes - 1
        case .write, .discard, .writeZeroes:
            request.dataOffset = headerBytes
            request.dataLength = chain.readableBytes - headerBytes
        case .flush, nil:
            break
        }
        return request
    }

    /// Used-ring length for a completed request: the bytes we wrote into device-writable buffers.
    public func usedLength(status: BlockStatus) -> UInt32 {
        switch (type, status) {
        case (.read, .ok), (.getID, .ok): UInt32(truncatingIfNeeded: dataLength + 1)
        default: 1
        }
    }
}

/// Why a chain could not be made into a request.
public enum BlockRequestError: Error, Equatable, Sendable {
    /// No device-writable byte: there is nowhere to put a status. The chain is returned with
    /// used length 0 so the driver gets its buffers back.
    case noStatusByte
    /// The status byte is known; the request fails with IOERR.
    case malformed(statusAddress: GuestAddress, reason: String)
}

/// One `{sector u64, num_sectors u32, flags u32}` range of a DISCARD or WRITE_ZEROES request.
public struct DiscardRange: Equatable, Sendable {
    public static let sizeBytes: UInt64 = 16
    public static let flagUnmap: UInt32 = 1
    public var sector: UInt64
    public var sectorCount: UInt32
    public var flags: UInt32

    public init(sector: UInt64, sectorCount: UInt32, flags: UInt32) {
        self.sector = sector
        self.sectorCount = sectorCount
        self.flags = flags
    }

    /// Reads range `index` of `request` from the chain.
    public static func read(_ index: UInt64, of request: BlockRequest, chain: DescriptorChain,
                            memory: GuestMemoryMap) throws(GuestMemoryError) -> DiscardRange {
        var raw = (UInt64(0), UInt32(0), UInt32(0))
        try withUnsafeMutableBytes(of: &raw) { (bytes) throws(GuestMemoryError) in
            try chain.copyReadable(offset: request.dataOffset + index * sizeBytes,
                                   into: UnsafeMutableRawBufferPointer(rebasing: bytes[0..<16]), memory: memory)
        }
        return DiscardRange(sector: UInt64(littleEndian: raw.0), sectorCount: UInt32(littleEndian: raw.1),
                            flags: UInt32(littleEndian: raw.2))
    }
}
