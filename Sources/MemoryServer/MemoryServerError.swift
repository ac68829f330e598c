import LinuxSystem

/// Why a memory server could not start or keep serving (not a request's status: those are
/// `WireStatus` values sent to the client).
public enum MemoryServerError: Error, CustomStringConvertible {
    /// A setting is out of range (the command line validates first; this guards the library).
    case invalidConfiguration(String)
    /// A system call failed while setting up: what was being done, and the error.
    case system(String, Errno)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): why
        case .system(let what, let errno): "\(what): \(errno)"
        }
    }
}
