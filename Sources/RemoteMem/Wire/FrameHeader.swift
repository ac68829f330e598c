/// The 40-byte header of every MemX frame (docs/PROTOCOL.md, "Frame"), little-endian.
public struct FrameHeader: Equatable, Sendable {
    public static let sizeBytes = 40

    /// Payload bytes after the header.
    public var length: UInt32
    /// The raw opcode (a reply carries its request's); `opcodeValue` is nil if unknown.
    public var opcode: UInt16
    public var status: UInt16
    public var requestID: UInt64
    public var volume: UInt32
    public var pageCount: UInt32
    public var epoch: UInt64
    public var page: UInt64

    public init(length: UInt32 = 0, opcode: Opcode, status: WireStatus = .ok, requestID: UInt64, volume: UInt32 = 0,
                pageCount: UInt32 = 0, epoch: UInt64 = 0, page: UInt64 = 0) {
        self.init(length: length, rawOpcode: opcode.rawValue, rawStatus: status.rawValue, requestID: requestID,
                  volume: volume, pageCount: pageCount, epoch: epoch, page: page)
    }

    public init(length: UInt32, rawOpcode: UInt16, rawStatus: UInt16, requestID: UInt64, volume: UInt32,
                pageCount: UInt32, epoch: UInt64, page: UInt64) {
        self.length = length
        self.opcode = rawOpcode
        self.status = rawStatus
        self.requestID = requestID
        self.volume = volume
        self.pageCount = pageCount
        self.epoch = epoch
        self.page = page
    }

    public var opcodeValue: Opcode? { Opcode(rawValue: opcode) }
    public var statusValue: WireStatus? { WireStatus(rawValue: status) }

    /// The reply header to this request, with `status` and `length` payload bytes.
    public func reply(status: WireStatus, length: Int = 0) -> FrameHeader {
        var header = self
        header.status = status.rawValue
        header.length = UInt32(length)
        return header
    }

    /// Writes the 40 bytes at `destination` (which must have room).
    public func encode(into destination: UnsafeMutableRawBufferPointer) {
        precondition(destination.count >= Self.sizeBytes)
        destination.storeBytes(of: length.littleEndian, toByteOffset: 0, as: UInt32.self)
        destination.storeBytes(of: opcode.littleEndian, toByteOffset: 4, as: UInt16.self)
        destination.storeBytes(of: status.littleEndian, toByteOffset: 6, as: UInt16.self)
        destination.storeBytes(of: requestID.littleEndian, toByteOffset: 8, as: UInt64.self)
        destination.storeBytes(of: volume.littleEndian, toByteOffset: 16, as: UInt32.self)
        destination.storeBytes(of: pageCount.littleEndian, toByteOffset: 20, as: UInt32.self)
        destination.storeBytes(of: epoch.littleEndian, toByteOffset: 24, as: UInt64.self)
        destination.storeBytes(of: page.littleEndian, toByteOffset: 32, as: UInt64.self)
    }

    /// The header as a new array (control path).
    public var bytes: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.sizeBytes)
        bytes.withUnsafeMutableBytes { encode(into: $0) }
        return bytes
    }

    /// Reads a header from the first 40 bytes of `source`.
    public static func decode(_ source: UnsafeRawBufferPointer) -> FrameHeader {
        precondition(source.count >= sizeBytes)
        return FrameHeader(length: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                           rawOpcode: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 4, as: UInt16.self)),
                           rawStatus: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 6, as: UInt16.self)),
                           requestID: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
                           volume: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 16, as: UInt32.self)),
                           pageCount: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 20, as: UInt32.self)),
                           epoch: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 24, as: UInt64.self)),
                           page: UInt64(littleEndian: source.loadUnaligned(fromByteOffset: 32, as: UInt64.self)))
    }
}

/// Why a frame was refused by the receiver (the connection is closed).
public enum FrameError: Error, Equatable, Sendable, CustomStringConvertible {
    case payloadTooLarge(opcode: UInt16, length: UInt32, limit: Int)
    case truncated(have: Int, need: Int)
    case malformedPayload(String)

    public var description: String {
        switch self {
        case .payloadTooLarge(let opcode, let length, let limit): "frame with opcode \(opcode) has \(length) payload bytes (limit \(limit))"
        case .truncated(let have, let need): "truncated payload: \(have) of \(need) bytes"
        case .malformedPayload(let why): "malformed payload: \(why)"
        }
    }
}
