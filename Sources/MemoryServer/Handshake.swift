/// Where one connection is in the handshake (docs/PROTOCOL.md, "Connection" and
/// "Authentication"): the nonces of its latest HELLO, which an AUTH proof must cover, and whether
/// the client proved the cluster key. One per connection, owned by its session and passed to
/// `RequestHandler.handle`, which alone changes it.
public struct Handshake: Equatable, Sendable {
    /// The client's nonce from the latest HELLO; nil before HELLO.
    public internal(set) var clientNonce: [UInt8]?
    /// The nonce this server sent in its latest HELLO reply: fresh random bytes per HELLO, so
    /// an AUTH recorded from another connection never matches.
    public internal(set) var serverNonce: [UInt8]?
    /// True once requests beyond HELLO and AUTH may be served: after HELLO on a server without a
    /// key, after a good AUTH on a server with one. Never reset on the connection.
    public internal(set) var authenticated = false

    public init() {}

    /// True once a HELLO was answered OK.
    public var greeted: Bool { serverNonce != nil }
}
