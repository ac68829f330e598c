/// Why a client and a server did not authenticate each other; the message says what to do.
public enum AuthenticationError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The server has a key and this client none.
    case keyRequired
    /// This client has a key and the server none: it cannot prove the key, so it is refused.
    case serverHasNoKey
    /// The server answered `AUTH_FAILED`: this client's key is not the server's.
    case refused
    /// The server's proof is wrong: another key, or not the server it claims to be.
    case wrongServerProof
    /// The AUTH reply was neither a proof nor `AUTH_FAILED`.
    case unexpectedReply(String)

    public var description: String {
        switch self {
        case .keyRequired:
            "the server requires the cluster key: pass --key-file"
        case .serverHasNoKey:
            "the server has no cluster key (started without --key-file), so it cannot prove the key: refused (give the server --key-file, or drop --key-file here)"
        case .refused:
            "the server refused this cluster key (AUTH_FAILED): --key-file does not hold the server's key"
        case .wrongServerProof:
            "the server's proof of the cluster key is wrong: it holds another key, or it is not the server it claims to be"
        case .unexpectedReply(let why):
            "the server's AUTH reply is not a proof of the cluster key: \(why)"
        }
    }
}
