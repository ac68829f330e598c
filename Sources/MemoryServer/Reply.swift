import RemoteMem

/// The answer to one request, as `RequestHandler` computes it and the connection sends it: a
/// header (whose `length` is already set) and where the payload bytes are.
public struct Reply: Equatable, Sendable {
    public var header: FrameHeader
    public var payload: ReplyPayload
    /// True if the connection ends after this reply (a HELLO this server cannot speak, a failed
    /// AUTH).
    public var closesConnection: Bool

    public init(header: FrameHeader, payload: ReplyPayload = .none, closesConnection: Bool = false) {
        self.header = header
        self.payload = payload
        self.closesConnection = closesConnection
    }

    /// A reply to `request` with `status` and no payload.
    public static func status(_ status: WireStatus, to request: FrameHeader) -> Reply {
        Reply(header: request.reply(status: status))
    }

    /// An OK reply to `request` carrying `bytes`.
    public static func ok(_ request: FrameHeader, bytes: [UInt8]) -> Reply {
        Reply(header: request.reply(status: .ok, length: bytes.count), payload: bytes.isEmpty ? .none : .bytes(bytes))
    }

    /// Bytes this reply puts on the wire, header included.
    public var wireBytes: Int { FrameHeader.sizeBytes + Int(header.length) }
}

/// Where a reply's payload is.
public enum ReplyPayload: Equatable, Sendable {
    /// No payload (`header.length` is 0).
    case none
    /// Control data, built for this reply.
    case bytes([UInt8])
    /// The first `count` bytes of the caller's page buffer (READ's pages, copied there by the
    /// handler so they go out without another copy).
    case pageBuffer(count: Int)
}
