import VhostUser

/// Why memx-bench stopped, and the exit status that goes with it. Bad flags and an
/// unreachable backend exit 2 with one line. Anything that goes wrong during the run exits 1.
enum BenchError: Error, CustomStringConvertible {
    /// A flag or a flag combination we cannot run with.
    case usage(String)
    /// The socket is missing, nobody listens on it, or the backend never answers the handshake.
    case unreachable(String)
    /// Read-back data differs from what was written.
    case dataMismatch(String)
    /// The backend completed a request with a non-OK status.
    case requestFailed(String)
    /// Any other frontend failure during the run.
    case frontend(FrontendError, during: String)

    var exitCode: Int32 {
        switch self {
        case .usage, .unreachable: 2
        case .dataMismatch, .requestFailed, .frontend: 1
        }
    }

    var description: String {
        switch self {
        case .usage(let why): why
        case .unreachable(let why): why
        case .dataMismatch(let why): "DATA MISMATCH: \(why)"
        case .requestFailed(let why): "request failed: \(why)"
        case .frontend(let error, let during): "\(during): \(error)"
        }
    }
}
