/// Everything that can go wrong on a vhost-user connection, classified by what the server
/// should do about it (style rule 7; vhost's `should_reconnect()`).
public enum VhostUserError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The frontend hung up.
    case disconnected
    /// A socket error.
    case io(errno: Int32)
    /// A header whose version bits are not 1, or whose payload is larger than we accept.
    case badHeader(String)
    /// A payload whose size does not match its request type.
    case badPayloadSize(request: String, size: Int, expected: String)
    /// A request code we do not know.
    case unknownRequest(UInt32)
    /// A well-formed request we do not implement (not negotiated).
    case unsupportedRequest(String)
    /// A request whose values are invalid (queue index out of range, ring size not a power of
    /// two, missing fd, ...). The connection survives; the request fails.
    case invalidRequest(String)
    /// A protocol-ordering violation that leaves the session unusable.
    case protocolViolation(String)

    /// True if the connection must be closed (the frontend will reconnect if it can).
    public var requiresDisconnect: Bool {
        switch self {
        case .disconnected, .io, .badHeader, .badPayloadSize, .protocolViolation: true
        case .unknownRequest, .unsupportedRequest, .invalidRequest: false
        }
    }

    public var description: String {
        switch self {
        case .disconnected: "frontend disconnected"
        case .io(let errno): "socket error (errno \(errno))"
        case .badHeader(let why): "bad message header: \(why)"
        case .badPayloadSize(let request, let size, let expected): "\(request) payload of \(size) bytes, expected \(expected)"
        case .unknownRequest(let code): "unknown request \(code)"
        case .unsupportedRequest(let name): "unsupported request \(name)"
        case .invalidRequest(let why): "invalid request: \(why)"
        case .protocolViolation(let why): "protocol violation: \(why)"
        }
    }
}
