import Glibc

/// Why a remote-memory operation failed: the one error type of the client (connections,
/// volumes, the page cache). `isRetryable` says whether trying again later can succeed
/// (a lost or slow connection) or not (a full pool, a lease taken over, a bad request).
public enum RemoteMemError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The server could not be reached (connect or HELLO failed, or the connection is down and
    /// reconnecting in the background).
    case unreachable(server: String, reason: String)
    /// A request got no reply within the request timeout; the connection was reset.
    case timedOut(server: String, operation: String, milliseconds: Int)
    /// The connection broke while the request was outstanding.
    case connectionLost(server: String, reason: String)
    /// The server broke the protocol (a reply that does not match its request).
    case protocolViolation(server: String, reason: String)
    /// The cluster-key handshake failed (a missing or wrong key on either side, or a server
    /// that cannot prove the key); retrying cannot help until a key file changes.
    case authenticationFailed(server: String, AuthenticationError)
    /// `FULL`: the server has no free frame; nothing of the write was applied.
    case full(server: String)
    /// `FENCED`: another backend opened the volume with a newer lease epoch.
    case fenced(server: String, volume: String, epoch: UInt64)
    /// Any other non-OK status.
    case refused(server: String, operation: String, status: WireStatus)
    /// The volume exists with another size (never a silent resize).
    case geometryMismatch(String)
    /// The volume's group table is damaged, from an unknown format, or names a server that is
    /// not in the pool.
    case corruptMetadata(String)
    /// The local cache file cannot be used: in use by another process, damaged, or not writable.
    case cacheFile(String)
    /// A caller error: a bad volume name, an empty server list, a range past the volume.
    case invalidArgument(String)
    /// The connection or store was closed by its owner.
    case closed

    /// True if the same request may succeed later without operator action.
    public var isRetryable: Bool {
        switch self {
        case .unreachable, .timedOut, .connectionLost: true
        case .refused(_, _, let status): status == .internalError
        case .full, .fenced, .protocolViolation, .authenticationFailed, .geometryMismatch, .corruptMetadata, .cacheFile, .invalidArgument, .closed: false
        }
    }

    /// The page-store error the block device turns into IOERR (and the operator reads).
    public var pageStoreError: PageStoreError {
        switch self {
        case .full: .full
        case .fenced: .busy(description)
        case .geometryMismatch(let why): .geometryMismatch(why)
        case .corruptMetadata(let why): .corrupt(why)
        case .timedOut: .io(errno: ETIMEDOUT, operation: description)
        case .unreachable, .connectionLost, .closed: .io(errno: ECONNRESET, operation: description)
        case .cacheFile(let why): .busy(why)
        case .authenticationFailed: .io(errno: EACCES, operation: description)
        case .protocolViolation, .refused, .invalidArgument: .io(errno: EIO, operation: description)
        }
    }

    public var description: String {
        switch self {
        case .unreachable(let server, let reason): "memory server \(server) is unreachable: \(reason)"
        case .timedOut(let server, let operation, let ms): "\(operation) to memory server \(server) timed out after \(ms) ms"
        case .connectionLost(let server, let reason): "connection to memory server \(server) lost: \(reason)"
        case .protocolViolation(let server, let reason): "memory server \(server) broke the protocol: \(reason)"
        case .authenticationFailed(let server, let why): "authentication with memory server \(server) failed: \(why)"
        case .full(let server): "memory server \(server) is full (no free frame for the write)"
        case .fenced(let server, let volume, let epoch):
            "volume '\(volume)' was opened by another backend: lease epoch \(epoch) is fenced on \(server)"
        case .refused(let server, let operation, let status): "memory server \(server) refused \(operation): \(status)"
        case .geometryMismatch(let why): why
        case .corruptMetadata(let why): why
        case .cacheFile(let why): why
        case .invalidArgument(let why): why
        case .closed: "the remote memory store is closed"
        }
    }
}
