import Glibc

/// An error number returned by a failed system call (`errno(3)`).
///
/// Every wrapper in `LinuxSystem` throws this and nothing else, so callers can switch on the
/// cause without unboxing an `any Error` (swift-system's `Errno`).
public struct Errno: Error, Equatable, Hashable, CustomStringConvertible, Sendable {
    public let rawValue: CInt

    public init(rawValue: CInt) { self.rawValue = rawValue }

    /// The current thread's `errno`.
    @inline(__always)
    public static var current: Errno { Errno(rawValue: errno) }

    public var description: String {
        guard let text = strerror(rawValue) else { return "errno \(rawValue)" }
        return String(cString: text)
    }

    public static let interrupted = Errno(rawValue: EINTR)
    public static let wouldBlock = Errno(rawValue: EAGAIN)
    public static let invalidArgument = Errno(rawValue: EINVAL)
    public static let brokenPipe = Errno(rawValue: EPIPE)
    public static let connectionReset = Errno(rawValue: ECONNRESET)
    public static let messageTooLong = Errno(rawValue: EMSGSIZE)
    public static let noSuchFile = Errno(rawValue: ENOENT)
    public static let fileExists = Errno(rawValue: EEXIST)
    public static let timedOut = Errno(rawValue: ETIMEDOUT)
    public static let badFileDescriptor = Errno(rawValue: EBADF)
    public static let outOfSpace = Errno(rawValue: ENOSPC)
}

/// Runs a system call, retrying on `EINTR`; this is the one EINTR policy of the project.
/// `EAGAIN` is returned to the caller as `Errno.wouldBlock`, never spun on.
@inline(__always)
func retryingInterrupts<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let error = Errno.current
        if error == .interrupted { continue }
        throw error
    }
}
