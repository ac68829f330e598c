/// The client's half of the `AUTH` exchange (docs/PROTOCOL.md, "Authentication"), shared by the
/// data-path handshake (`ServerConnection.handshake`, also used for every reconnect) and the
/// control client: what to send after the server's HELLO reply, and whether the server's answer
/// proves that it holds the same cluster key.
///
/// Policy: a client with a key refuses a server without one (such a server cannot prove the
/// key, so it may be an impostor); a client without a key refuses a server that wants one (with
/// a message saying to pass `--key-file`) rather than sending requests that would all be
/// answered `UNAUTHENTICATED`.
public struct ClientAuthentication: Sendable {
    /// The client's key; nil: the client expects a server without one.
    public let key: ClusterKey?
    /// The nonce this client sent in its HELLO.
    public let clientNonce: [UInt8]

    public init(key: ClusterKey?, clientNonce: [UInt8]) {
        precondition(clientNonce.count == WireMessages.nonceBytes)
        self.key = key
        self.clientNonce = clientNonce
    }

    /// The `AUTH` payload to send after `hello`, or nil when neither side has a key. Throws if
    /// only one side has a key.
    public func request(after hello: HelloReply) throws(AuthenticationError) -> [UInt8]? {
        switch (key, hello.requiresAuthentication) {
        case (nil, false): return nil
        case (nil, true): throw .keyRequired
        case (.some, false): throw .serverHasNoKey
        case (let key?, true):
            return WireMessages.auth(proof: key.clientProof(clientNonce: clientNonce, serverNonce: hello.serverNonce,
                                                            serverID: hello.serverID))
        }
    }

    /// Checks the server's `AUTH` reply (its raw `status` and payload) to the request made
    /// after `hello`: it must be `OK` carrying the server's proof for this very connection
    /// (both nonces), compared in constant time.
    public func verify(status: UInt16, payload: [UInt8], after hello: HelloReply) throws(AuthenticationError) {
        guard let key else { throw .unexpectedReply("an AUTH reply, but no AUTH was sent") }
        switch WireStatus(rawValue: status) {
        case .ok: break
        case .authFailed: throw .refused
        case let other?: throw .unexpectedReply("status \(other)")
        case nil: throw .unexpectedReply("unknown status \(status)")
        }
        let proof: [UInt8]
        do {
            proof = try WireMessages.authProof(payload)
        } catch {
            throw .unexpectedReply("\(error)")
        }
        let expected = key.serverProof(clientNonce: clientNonce, serverNonce: hello.serverNonce, serverID: hello.serverID)
        guard ClusterKey.proofsMatch(proof, expected) else { throw .wrongServerProof }
    }
}
