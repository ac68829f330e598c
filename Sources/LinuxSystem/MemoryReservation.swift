import Glibc

/// A range of anonymous virtual memory reserved once and committed page by page as it is
/// touched (`mmap(MAP_NORESERVE)`), whose pages can be handed back to the kernel one by one
/// (`madvise(MADV_DONTNEED)`). memx-server's page arena lives in one.
///
/// Reserving costs address space, not memory: the kernel commits a page on its first write and
/// `discard` makes it read as zeros again and drops it from the resident set.
public struct MemoryReservation: ~Copyable, @unchecked Sendable {
    // SAFETY: `base` is only a base address; every access through it is bounds-checked by the
    // owner (MemoryServer.PageArena) against `length` before it is made.
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Reserves `length` bytes (a multiple of the page size), readable and writable, committed
    /// on first touch.
    public init(length: Int) throws(Errno) {
        guard length > 0 else { throw .invalidArgument }
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let address, address != MAP_FAILED else { throw Errno.current }
        base = address
        self.length = length
    }

    deinit { munmap(base, length) }

    /// Gives the pages of `[offset, offset + count)` back to the kernel: they read as zeros and
    /// leave the resident set. The range must be page-aligned and inside the reservation.
    public func discard(offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= length, "discard outside the reservation")
        // SAFETY: the range was checked against the reservation on the line above.
        let rc = madvise(base + offset, count, MADV_DONTNEED)
        precondition(rc == 0, "madvise(MADV_DONTNEED) failed: \(Errno.current)")
    }
}
