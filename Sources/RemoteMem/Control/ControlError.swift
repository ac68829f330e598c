import Glibc
import LinuxSystem

/// Why a control operation on a memory server failed: the one error type of `ControlClient`.
///
/// Every case names the server, so a tool talking to many servers can print the error as is.
/// `isUnreachable` separates "the server could not be talked to" from "the server answered no".
public enum ControlError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Nothing listens at the address (`ECONNREFUSED`).
    case connectionRefused(server: String)
    /// The connect, or a reply, did not come within the timeout; the connection was closed.
    case timedOut(server: String, operation: String, milliseconds: Int)
    /// The connect failed for another reason (no route, network down, ...).
    case unreachable(server: String, reason: String)
    /// The connection broke (closed by the server, reset) during `operation`.
    case connectionLost(server: String, operation: String, reason: String)
    /// The server does not speak this protocol version (its `HELLO` reply says which it does).
    case unsupportedVersion(server: String, version: UInt16)
    /// The server broke the protocol: a reply that does not answer the request, a bad payload.
    case protocolViolation(server: String, reason: String)
    /// The cluster-key handshake failed: a missing or wrong key on either side, or a server
    /// that cannot prove the key. A configuration error, not an outage.
    case authenticationFailed(server: String, AuthenticationError)
    /// The server answered with a status other than `OK`; `volume` names the volume asked about.
    case refused(server: String, operation: Opcode, status: WireStatus, volume: String?)
    /// A caller error caught before anything was sent: a bad volume name or size.
    case invalidArgument(String)
    /// The server does not offer `what` (an older memx-server, without de-duplication); nothing
    /// was sent.
    case unsupported(server: String, what: String)

    /// True if the server could not be talked to at all (as opposed to answering no).
    public var isUnreachable: Bool {
        switch self {
        case .connectionRefused, .timedOut, .unreachable, .connectionLost: true
        case .unsupportedVersion, .protocolViolation, .authenticationFailed, .refused, .invalidArgument, .unsupported: false
        }
    }

    /// The status the server answered with, for `refused`; nil otherwise.
    public var status: WireStatus? {
        if case .refused(_, _, let status, _) = self { return status }
        return nil
    }

    /// The error of a failed connect to `server` (from `TCPConnection(connectingTo:)`).
    static func connecting(_ errno: Errno, server: String, timeoutMillis: Int) -> ControlError {
        switch errno.rawValue {
        case ECONNREFUSED: .connectionRefused(server: server)
        case ETIMEDOUT, EAGAIN: .timedOut(server: server, operation: "connect", milliseconds: timeoutMillis)
        default: .unreachable(server: server, reason: errno.description)
        }
    }

    /// The error of a failed send or receive on an established connection.
    static func transfer(_ errno: Errno, server: String, operation: String, timeoutMillis: Int) -> ControlError {
        switch errno.rawValue {
        case EAGAIN, ETIMEDOUT: .timedOut(server: server, operation: operation, milliseconds: timeoutMillis)
        case ECONNRESET, EPIPE: .connectionLost(server: server, operation: operation, reason: "closed by the server")
        default: .connectionLost(server: server, operation: operation, reason: errno.description)
        }
    }

    public var description: String {
        switch self {
        case .connectionRefused(let server):
            "\(server): connection refused (is memx-server running there?)"
        case .timedOut(let server, let operation, let milliseconds):
            "\(server): \(operation) timed out after \(milliseconds) ms"
        case .unreachable(let server, let reason):
            "\(server): unreachable: \(reason)"
        case .connectionLost(let server, let operation, let reason):
            "\(server): connection lost during \(operation): \(reason)"
        case .unsupportedVersion(let server, let version):
            "\(server): speaks protocol version \(version), this tool speaks \(WireLimits.version)"
        case .protocolViolation(let server, let reason):
            "\(server): protocol violation: \(reason)"
        case .authenticationFailed(let server, let why):
            "\(server): authentication failed: \(why)"
        case .refused(let server, let operation, let status, let volume):
            Self.describeRefusal(server: server, operation: operation, status: status, volume: volume)
        case .invalidArgument(let why):
            why
        case .unsupported(let server, let what):
            "\(server): this memx-server does not de-duplicate (an older version): \(what) need(s) a newer one"
        }
    }

    private static func describeRefusal(server: String, operation: Opcode, status: WireStatus, volume: String?) -> String {
        let subject = volume.map { "volume '\($0)'" } ?? "the request"
        switch status {
        case .notFound: return "\(server): \(subject) not found (NOT_FOUND)"
        case .exists: return "\(server): \(subject) exists (EXISTS)"
        case .full: return "\(server): \(operation) of \(subject) refused: the server is full (FULL)"
        case .invalid: return "\(server): \(operation) of \(subject) refused as invalid (INVALID)"
        default: return "\(server): \(operation) of \(subject) refused: \(status)"
        }
    }
}
