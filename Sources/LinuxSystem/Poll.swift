import Glibc

/// `poll(2)` over a few descriptors; the readiness loop of control and worker threads.
public enum Poll {
    /// Waits until one of `fds` is readable (or hung up). Returns the indices that are ready.
    /// `timeoutMillis` < 0 waits forever. EINTR returns an empty result so callers can re-check
    /// their stop flags.
    public static func waitReadable(_ fds: inout [pollfd], timeoutMillis: Int32) throws(Errno) -> Int {
        for i in fds.indices { fds[i].revents = 0 }
        let n = fds.withUnsafeMutableBufferPointer { buf in
            Glibc.poll(buf.baseAddress, nfds_t(buf.count), timeoutMillis)
        }
        if n < 0 {
            let error = Errno.current
            if error == .interrupted { return 0 }
            throw error
        }
        return Int(n)
    }

    public static func readable(_ fd: CInt) -> pollfd { pollfd(fd: fd, events: Int16(POLLIN), revents: 0) }
}
