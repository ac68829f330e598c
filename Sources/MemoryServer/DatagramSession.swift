import RemoteMem

/// One UDP client as the server knows it (docs/PROTOCOL.md, "UDP transport"): its peer
/// address's latest HELLO, the handshake state that HELLO began, and the replies it was sent.
/// A new HELLO from the same address (another nonce) starts a new session; the same HELLO again
/// is a retransmission, answered with the same reply (same server nonce).
final class DatagramSession {
    var handshake = Handshake()
    /// The HELLO payload (with the client's nonce) that began this session, and its reply.
    let helloRequest: [UInt8]
    var helloReply: [UInt8] = []
    let replies: ReplyCache
    let started: ContinuousClock.Instant
    var lastHeard: ContinuousClock.Instant

    init(helloRequest: [UInt8]) throws {
        self.helloRequest = helloRequest
        replies = try ReplyCache()
        started = .now
        lastHeard = started
    }
}
