import Glibc

/// A file descriptor this process owns: closed exactly once, when its owner goes away.
///
/// `~Copyable` makes double-close and use-after-close compile errors. `release()` hands the
/// raw number to a new owner (for example `SharedFileDescriptor`).
public struct FileDescriptor: ~Copyable {
    public let rawValue: CInt

    public init(adopting rawValue: CInt) {
        precondition(rawValue >= 0, "adopting an invalid file descriptor")
        self.rawValue = rawValue
    }

    deinit { _ = Glibc.close(rawValue) }

    /// Gives up ownership without closing.
    public consuming func release() -> CInt {
        let value = rawValue
        discard self
        return value
    }

    /// `ftruncate(2)`.
    public func truncate(to size: Int) throws(Errno) {
        _ = try retryingInterrupts { ftruncate(rawValue, off_t(size)) }
    }

    /// The file's size from `fstat(2)`.
    public func size() throws(Errno) -> Int {
        var info = stat()
        _ = try retryingInterrupts { fstat(rawValue, &info) }
        return Int(info.st_size)
    }

    /// Reads exactly `count` bytes or throws (EOF reads as `ECONNRESET`).
    public func readExactly(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try retryingInterrupts { Glibc.read(rawValue, buffer.baseAddress! + done, buffer.count - done) }
            if n == 0 { throw .connectionReset }
            done += n
        }
    }

    /// Writes every byte of `buffer`.
    public func writeAll(_ buffer: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try retryingInterrupts { Glibc.write(rawValue, buffer.baseAddress! + done, buffer.count - done) }
            done += n
        }
    }

    /// `flock(2)` exclusive: `EWOULDBLOCK` when another process still holds it after
    /// `graceMillis`. The grace covers a holder that is just exiting, and a child process
    /// forked (by anyone in this process) between `fork` and `exec`, which shares the open
    /// file description, and with it the lock, for that moment.
    public func lockExclusive(graceMillis: Int = 1000) throws(Errno) {
        var waited = 0
        while true {
            do {
                _ = try retryingInterrupts { flock(rawValue, LOCK_EX | LOCK_NB) }
                return
            } catch {
                guard error == .wouldBlock, waited < graceMillis else { throw error }
                usleep(10_000)
                waited += 10
            }
        }
    }
}

/// A file descriptor shared between threads (kick and call eventfds, the listening socket).
/// Closed when the last reference goes away; the number itself never changes.
public final class SharedFileDescriptor: Sendable {
    public let rawValue: CInt

    public init(_ descriptor: consuming FileDescriptor) { rawValue = descriptor.release() }

    deinit { _ = Glibc.close(rawValue) }
}
