/// The 12-byte header of every vhost-user message, in native (little-endian) byte order:
/// `request u32, flags u32, size u32` (vhost-user spec, "Message Specification").
public struct MessageHeader: Equatable, Sendable {
    public static let sizeBytes = 12
    /// Flags bits 0–1: protocol version, always 1.
    public static let version: UInt32 = 0x1
    /// Bit 2: this is a reply.
    public static let replyFlag: UInt32 = 0x4
    /// Bit 3: the sender wants a REPLY_ACK.
    public static let needReplyFlag: UInt32 = 0x8

    public var request: UInt32
    public var flags: UInt32
    public var size: UInt32

    public init(request: UInt32, flags: UInt32, size: UInt32) {
        self.request = request
        self.flags = flags
        self.size = size
    }

    public var needsReply: Bool { flags & Self.needReplyFlag != 0 }
    public var isReply: Bool { flags & Self.replyFlag != 0 }

    /// QEMU 7.2 rejects a reply unless its flags are exactly 0x5 (version 1 | REPLY).
    public static func reply(to request: UInt32, size: Int) -> MessageHeader {
        MessageHeader(request: request, flags: version | replyFlag, size: UInt32(size))
    }

    public func encode(into bytes: inout [UInt8]) {
        for value in [request, flags, size] {
            withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) }
        }
    }

    public static func decode(_ raw: UnsafeRawBufferPointer) -> MessageHeader {
        precondition(raw.count >= sizeBytes)
        return MessageHeader(request: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt32.self)),
                             flags: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4, as: UInt32.self)),
                             size: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
    }
}
