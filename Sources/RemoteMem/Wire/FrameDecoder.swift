/// Reassembles frames from a byte stream delivered in arbitrary pieces (a TCP receive loop, or
/// a test feeding one byte at a time). The header is checked against the limits as soon as its
/// 40 bytes are in, so a hostile length never makes the decoder buffer more than the limit.
public struct FrameDecoder {
    /// A function giving the payload limit for a received header (requests and replies differ).
    public typealias Limit = (FrameHeader) -> Int

    private var buffer: [UInt8] = []
    private let limit: Limit

    public init(limit: @escaping Limit) { self.limit = limit }

    /// The limit a server applies to requests.
    public static func requestLimit(_ header: FrameHeader) -> Int {
        guard let opcode = header.opcodeValue else { return WireLimits.smallPayloadBytesMax }
        return WireLimits.requestPayloadMax(opcode, pageCount: header.pageCount)
    }

    /// The limit a client applies to replies.
    public static func replyLimit(_ header: FrameHeader) -> Int { WireLimits.payloadBytesMax }

    /// Appends received bytes.
    public mutating func append(_ bytes: some Collection<UInt8>) { buffer.append(contentsOf: bytes) }

    /// Bytes buffered and not yet returned as a frame.
    public var bufferedBytes: Int { buffer.count }

    /// The next complete frame, or nil if more bytes are needed. Throws if the header announces
    /// more payload than the limit allows.
    public mutating func next() throws(FrameError) -> (header: FrameHeader, payload: [UInt8])? {
        guard buffer.count >= FrameHeader.sizeBytes else { return nil }
        let header = buffer.withUnsafeBytes { FrameHeader.decode($0) }
        let max = limit(header)
        guard Int(header.length) <= max else {
            throw .payloadTooLarge(opcode: header.opcode, length: header.length, limit: max)
        }
        let total = FrameHeader.sizeBytes + Int(header.length)
        guard buffer.count >= total else { return nil }
        let payload = Array(buffer[FrameHeader.sizeBytes..<total])
        buffer.removeFirst(total)
        return (header, payload)
    }
}
