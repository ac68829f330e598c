/// Little-endian payload fields for the control opcodes (names, sizes, metadata). Page data is
/// not encoded: it travels raw.
public struct PayloadWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    public mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    /// u16 length + UTF-8 bytes.
    public mutating func name(_ name: String) {
        let utf8 = Array(name.utf8)
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    /// u32 length + bytes.
    public mutating func blob(_ blob: [UInt8]) {
        u32(UInt32(blob.count))
        bytes.append(contentsOf: blob)
    }
}

/// Reads payload fields with bounds checks: a short or inconsistent payload is a `FrameError`,
/// never a crash.
public struct PayloadReader {
    private let bytes: [UInt8]
    public private(set) var offset = 0
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int) throws(FrameError) -> ArraySlice<UInt8> {
        guard n >= 0, remaining >= n else { throw .truncated(have: remaining, need: n) }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(FrameError) -> T {
        let slice = try take(MemoryLayout<T>.size)
        var value: T = 0
        for (i, byte) in slice.enumerated() { value |= T(byte) << (8 * i) }
        return value
    }

    public mutating func u16() throws(FrameError) -> UInt16 { try integer(UInt16.self) }
    public mutating func u32() throws(FrameError) -> UInt32 { try integer(UInt32.self) }
    public mutating func u64() throws(FrameError) -> UInt64 { try integer(UInt64.self) }
    public mutating func raw(_ n: Int) throws(FrameError) -> [UInt8] { Array(try take(n)) }

    /// A u16-length name, checked against `WireLimits.isValidName`.
    public mutating func name() throws(FrameError) -> String {
        let length = Int(try u16())
        guard length <= WireLimits.nameBytesMax else { throw .malformedPayload("name of \(length) bytes") }
        let name = String(decoding: try take(length), as: UTF8.self)
        guard WireLimits.isValidName(name) else { throw .malformedPayload("invalid volume name") }
        return name
    }

    /// A u32-length blob of at most `limit` bytes.
    public mutating func blob(limit: Int) throws(FrameError) -> [UInt8] {
        let length = Int(try u32())
        guard length <= limit else { throw .malformedPayload("blob of \(length) bytes (limit \(limit))") }
        return Array(try take(length))
    }

    /// Throws unless every byte was consumed (trailing garbage is malformed).
    public func finish() throws(FrameError) {
        guard remaining == 0 else { throw .malformedPayload("\(remaining) trailing bytes") }
    }
}
