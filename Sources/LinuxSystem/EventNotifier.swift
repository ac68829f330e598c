import CMemxShims
import Glibc

/// An eventfd used as a doorbell (virtio kick and call, worker wake-ups).
///
/// Signalling adds 1 to the counter; draining reads and resets it. Both are non-blocking-safe:
/// a full counter (`EAGAIN` on write) means the peer already has a pending wake-up.
public final class EventNotifier: Sendable {
    public let descriptor: SharedFileDescriptor

    public var rawValue: CInt { descriptor.rawValue }

    /// Wraps an eventfd received from the frontend.
    public init(_ descriptor: consuming FileDescriptor) {
        self.descriptor = SharedFileDescriptor(descriptor)
    }

    /// Creates a new non-blocking eventfd.
    public convenience init() throws(Errno) {
        let fd = try retryingInterrupts { eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK)) }
        self.init(FileDescriptor(adopting: fd))
    }

    /// Adds one to the counter. Never blocks; errors other than a full counter are ignored
    /// because a notification the peer cannot receive is not ours to recover.
    @inline(__always)
    public func signal() {
        var one: UInt64 = 1
        _ = Glibc.write(descriptor.rawValue, &one, 8)
    }

    /// Reads and resets the counter; returns 0 if nothing was pending.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let n = Glibc.read(descriptor.rawValue, &value, 8)
        return n == 8 ? value : 0
    }
}
