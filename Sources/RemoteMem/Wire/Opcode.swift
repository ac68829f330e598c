/// MemX wire opcodes (docs/PROTOCOL.md, "Opcodes").
public enum Opcode: UInt16, Sendable, CustomStringConvertible {
    case hello = 1
    case ping = 2
    case serverStat = 3
    case auth = 4
    case serverDrain = 5
    /// The server's de-duplication numbers (docs/PROTOCOL.md, "De-duplication").
    case dedupStat = 6
    case volumeCreate = 10
    case volumeOpen = 11
    case volumeClose = 12
    case volumeDelete = 13
    case volumeStat = 14
    case volumeList = 15
    case metadataPut = 16
    case hotPagesPut = 17
    case hotPagesGet = 18
    /// A new volume sharing every page of a template until written.
    case volumeClone = 19
    case read = 20
    case write = 21
    case trim = 22
    /// One volume's sharing: its policy, shared pages and fair share of memory.
    case volumeDedupStat = 23

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .ping: "PING"
        case .serverStat: "SERVER_STAT"
        case .auth: "AUTH"
        case .serverDrain: "SERVER_DRAIN"
        case .dedupStat: "DEDUP_STAT"
        case .volumeCreate: "VOLUME_CREATE"
        case .volumeOpen: "VOLUME_OPEN"
        case .volumeClose: "VOLUME_CLOSE"
        case .volumeDelete: "VOLUME_DELETE"
        case .volumeStat: "VOLUME_STAT"
        case .volumeList: "VOLUME_LIST"
        case .metadataPut: "METADATA_PUT"
        case .hotPagesPut: "HOT_PAGES_PUT"
        case .hotPagesGet: "HOT_PAGES_GET"
        case .volumeClone: "VOLUME_CLONE"
        case .read: "READ"
        case .write: "WRITE"
        case .trim: "TRIM"
        case .volumeDedupStat: "VOLUME_DEDUP_STAT"
        }
    }
}

/// Reply status codes (docs/PROTOCOL.md, "Status codes").
public enum WireStatus: UInt16, Sendable, Error, CustomStringConvertible {
    case ok = 0
    case notFound = 1
    case exists = 2
    case full = 3
    case fenced = 4
    case invalid = 5
    case conflict = 6
    case unsupported = 7
    case unsupportedVersion = 8
    case internalError = 9
    /// A request other than HELLO or AUTH on a server with a key, before AUTH succeeded.
    case unauthenticated = 10
    /// An AUTH whose proof does not match the server's key; the connection closes.
    case authFailed = 11

    public var description: String {
        switch self {
        case .ok: "OK"
        case .notFound: "NOT_FOUND"
        case .exists: "EXISTS"
        case .full: "FULL"
        case .fenced: "FENCED"
        case .invalid: "INVALID"
        case .conflict: "CONFLICT"
        case .unsupported: "UNSUPPORTED"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .internalError: "INTERNAL"
        case .unauthenticated: "UNAUTHENTICATED"
        case .authFailed: "AUTH_FAILED"
        }
    }
}
