import Virtio

/// A virtio-blk request as the frontend submits it (VIRTIO 1.2 §5.2.6). It says what kind of
/// request it is and how many bytes go each way. `BlockQueueClient` turns it into a 16-byte
/// header, data buffers and a status byte in the slot's guest memory.
///
/// Sector numbers are always in 512-byte units, whatever `blk_size` is.
public enum BlockOperation: Equatable, Sendable {
    /// VIRTIO_BLK_T_IN: the device writes `byteCount` bytes into the slot's data buffer.
    case read(sector: UInt64, byteCount: Int)
    /// VIRTIO_BLK_T_OUT: the device reads `byteCount` bytes from the slot's data buffer. Fill
    /// it first with `writeData`, or pass the data to `submit`.
    case write(sector: UInt64, byteCount: Int)
    /// VIRTIO_BLK_T_FLUSH: header and status only, sector 0.
    case flush
    /// VIRTIO_BLK_T_GET_ID: the device writes up to 20 bytes of serial.
    case getID
    /// VIRTIO_BLK_T_DISCARD with these ranges as its device-readable payload.
    case discard([DiscardRange])
    /// VIRTIO_BLK_T_WRITE_ZEROES with these ranges (flag bit 0 = UNMAP allowed).
    case writeZeroes([DiscardRange])
    /// Any type code, with `readableBytes` of payload after the header and `writableBytes`
    /// before the status byte. Tests use it for unknown types and odd shapes.
    case raw(type: UInt32, sector: UInt64, readableBytes: Int, writableBytes: Int)

    /// Bytes of the 512-byte sector unit.
    public static let sectorBytes = 512
    /// Bytes a GET_ID answer may fill (VIRTIO_BLK_ID_BYTES).
    public static let idBytes = 20

    /// The header's type field.
    public var typeCode: UInt32 {
        switch self {
        case .read: BlockRequestType.read.rawValue
        case .write: BlockRequestType.write.rawValue
        case .flush: BlockRequestType.flush.rawValue
        case .getID: BlockRequestType.getID.rawValue
        case .discard: BlockRequestType.discard.rawValue
        case .writeZeroes: BlockRequestType.writeZeroes.rawValue
        case .raw(let type, _, _, _): type
        }
    }

    /// The header's sector field.
    public var sector: UInt64 {
        switch self {
        case .read(let sector, _), .write(let sector, _), .raw(_, let sector, _, _): sector
        case .flush, .getID, .discard, .writeZeroes: 0
        }
    }

    /// Payload bytes the device reads after the header (from the start of the slot's data
    /// buffer).
    public var readableDataBytes: Int {
        switch self {
        case .write(_, let count): count
        case .discard(let ranges), .writeZeroes(let ranges): ranges.count * Int(DiscardRange.sizeBytes)
        case .raw(_, _, let readable, _): readable
        case .read, .flush, .getID: 0
        }
    }

    /// Bytes the device may write before the status byte. They sit in the slot's data buffer,
    /// right after the readable payload.
    public var writableDataBytes: Int {
        switch self {
        case .read(_, let count): count
        case .getID: Self.idBytes
        case .raw(_, _, _, let writable): writable
        case .write, .flush, .discard, .writeZeroes: 0
        }
    }
}

/// One request the backend finished, as read from the used ring and the slot's status byte.
public struct BlockCompletion: Equatable, Sendable {
    /// The request slot, which is free again when the completion is handed out. Its data buffer
    /// keeps the read data until the slot is used again.
    public var slot: Int
    /// The descriptor head the used element named.
    public var head: UInt16
    /// The status byte as the device left it. `BlockQueueClient.statusUnwritten` (0xff) means
    /// the device never wrote it.
    public var statusByte: UInt8
    /// The used element's `len`: bytes the device says it wrote into writable buffers.
    public var usedLength: UInt32
    /// The request's type code and its writable data size, copied from the submission.
    public var typeCode: UInt32
    public var writableDataBytes: Int

    public init(slot: Int, head: UInt16, statusByte: UInt8, usedLength: UInt32, typeCode: UInt32,
                writableDataBytes: Int) {
        self.slot = slot
        self.head = head
        self.statusByte = statusByte
        self.usedLength = usedLength
        self.typeCode = typeCode
        self.writableDataBytes = writableDataBytes
    }

    /// The status as a known code, or nil for anything else (including "unwritten").
    public var status: BlockStatus? { BlockStatus(rawValue: statusByte) }

    public var isOK: Bool { statusByte == BlockStatus.ok.rawValue }

    /// The used length a careful device reports for this request when it succeeds: the
    /// writable data plus the status byte. qemu-storage-daemon reports that for reads.
    public var expectedUsedLength: UInt32 { UInt32(writableDataBytes + 1) }
}
