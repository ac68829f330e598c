import CMemxShims
import Glibc

/// Termination signals delivered as a readable descriptor (`signalfd(2)`), so the control loop
/// can wait for QEMU and for SIGTERM/SIGINT in one `poll`.
public final class TerminationSignals: Sendable {
    public let descriptor: SharedFileDescriptor

    /// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and every thread it starts
    /// afterwards) and returns a descriptor that becomes readable when one arrives. Also ignores
    /// SIGPIPE: a vanished peer is an error return, not a process kill.
    public init() throws(Errno) {
        signal(SIGPIPE, SIG_IGN)
        var mask = sigset_t()
        sigemptyset(&mask)
        sigaddset(&mask, SIGTERM)
        sigaddset(&mask, SIGINT)
        sigaddset(&mask, SIGHUP)
        let rc = pthread_sigmask(SIG_BLOCK, &mask, nil)
        if rc != 0 { throw Errno(rawValue: rc) }
        let fd = try retryingInterrupts { signalfd(-1, &mask, Int32(SFD_CLOEXEC | SFD_NONBLOCK)) }
        descriptor = SharedFileDescriptor(FileDescriptor(adopting: fd))
    }

    /// The signal number that arrived, if any.
    public func take() -> Int32? {
        var info = signalfd_siginfo()
        let n = read(descriptor.rawValue, &info, MemoryLayout<signalfd_siginfo>.size)
        return n == MemoryLayout<signalfd_siginfo>.size ? Int32(info.ssi_signo) : nil
    }
}
