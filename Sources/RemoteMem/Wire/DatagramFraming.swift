/// How frames travel over UDP (docs/PROTOCOL.md, "UDP transport"): one frame per datagram,
/// the same header and payloads as over TCP, with the request id carrying the client's window
/// slot and, for a READ or WRITE split into one-page datagrams, the part.
public enum DatagramFraming {
    /// The largest datagram either side sends or accepts: under IPv4's 65 507-byte UDP limit.
    /// A one-page READ reply or WRITE request is 4 136 bytes; control frames may use the rest.
    public static let datagramBytesMax = 65_000
    /// The largest payload of one datagram.
    public static let payloadBytesMax = datagramBytesMax - FrameHeader.sizeBytes
    /// Pages per READ/WRITE datagram: one 4 KiB page and its header in one datagram (under a
    /// 9000-byte jumbo MTU, one IP packet). A request for more pages is split into this many
    /// per datagram, each its own part.
    public static let pagesPerDatagram: UInt32 = 1
    /// Bits of a request id below the sequence number: 8 for the window slot, 5 for the part.
    public static let slotBits = 8
    public static let partBits = 5
    public static let sequenceShift = slotBits + partBits
    /// The HELLO and AUTH of a UDP session use these ids (below every request's).
    public static let helloRequestID: UInt64 = 1
    public static let authRequestID: UInt64 = 2

    /// The request id of `part` of the request with `sequence` in `slot`.
    public static func requestID(sequence: UInt64, slot: Int, part: Int) -> UInt64 {
        sequence << UInt64(sequenceShift) | UInt64(part) << UInt64(slotBits) | UInt64(slot)
    }

    /// The reply-cache key of a request id: its slot and part (one live request per key, ids
    /// only grow per key, so a smaller id under a key is a stale duplicate).
    public static func cacheKey(_ requestID: UInt64) -> Int { Int(requestID & (1 << UInt64(sequenceShift) - 1)) }

    /// Reply-cache entries per session: every slot × part a client can use.
    public static let cacheKeys = 1 << sequenceShift
}

/// Which transport carries the protocol (`--transport`).
public enum Transport: String, Sendable, CaseIterable, CustomStringConvertible {
    case tcp
    case udp
    public var description: String { rawValue }
}
