import LinuxSystem

/// A shared-memory file mapped in full, handed out as `RingMemory` windows: the inflight
/// tracking region (GET/SET_INFLIGHT_FD) lives in one of these. Unmapped when the last window
/// and the area itself are gone.
public final class SharedMemoryArea: Sendable {
    private let mapping: MemoryMapping

    /// Maps `size` bytes of `fd` at `offset`, shared and read-write.
    public init(fd: borrowing FileDescriptor, size: UInt64, offset: UInt64) throws(Errno) {
        guard size > 0, size <= 1 << 32, offset <= 1 << 32 else { throw .invalidArgument }
        mapping = try MemoryMapping(fd: fd.rawValue, length: Int(size), offset: Int(offset))
    }

    public var sizeBytes: Int { mapping.length }

    /// A window of `length` bytes at `offset`, or nil if it does not fit.
    public func window(offset: Int, length: Int) -> RingMemory? {
        guard offset >= 0, length >= 0, offset <= mapping.length - length else { return nil }
        // SAFETY: [offset, offset + length) is inside the mapping, checked above; the window
        // keeps `self` (and so the mapping) alive.
        return RingMemory(base: mapping.base + offset, length: length, region: self)
    }
}
