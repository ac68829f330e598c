import CMemxShims
import Glibc

extension UnixConnection {
    /// Bounds how long one receive or send on this socket may block (`SO_RCVTIMEO` and
    /// `SO_SNDTIMEO`, socket(7)).
    ///
    /// A call that runs out of time fails with `Errno.wouldBlock`. This includes a receive that
    /// already has part of a message. `nil` means wait forever, which is the default for a new
    /// socket. The vhost-user frontend (tests, memx-bench) uses this so a silent backend cannot
    /// hang it.
    public func setTimeouts(receiveMillis: Int?, sendMillis: Int?) throws(Errno) {
        try setTimeout(option: SO_RCVTIMEO, millis: receiveMillis)
        try setTimeout(option: SO_SNDTIMEO, millis: sendMillis)
    }

    private func setTimeout(option: CInt, millis: Int?) throws(Errno) {
        let value = max(0, millis ?? 0)
        var interval = timeval(tv_sec: value / 1000, tv_usec: (value % 1000) * 1000)
        // A zero timeval means "no timeout" to the kernel. Round a requested 0 ms up to 1 µs so
        // that it still times out.
        if millis != nil && value == 0 { interval.tv_usec = 1 }
        let rc = setsockopt(descriptor.rawValue, SOL_SOCKET, option, &interval,
                            socklen_t(MemoryLayout<timeval>.size))
        if rc < 0 { throw Errno.current }
    }
}
