import Glibc
import CMemxShims

/// A `mmap(2)` of a file, owned: unmapped exactly once in `deinit`.
public struct MemoryMapping: ~Copyable, @unchecked Sendable {
    // SAFETY: the pointer is only a base address; accesses through it are bounds-checked by
    // the owners (GuestMemoryRegion, DirtyLog, SharedMemoryFile) against `length`.
    public let base: UnsafeMutableRawPointer
    public let length: Int

    /// Maps `length` bytes of `fd` at file offset `offset`, shared and read-write.
    public init(fd: CInt, length: Int, offset: Int = 0, writable: Bool = true) throws(Errno) {
        guard length > 0 else { throw .invalidArgument }
        let protection = writable ? (PROT_READ | PROT_WRITE) : PROT_READ
        let address = mmap(nil, length, protection, MAP_SHARED, fd, off_t(offset))
        guard let address, address != MAP_FAILED else { throw Errno.current }
        self.base = address
        self.length = length
    }

    /// Anonymous private memory (tests and preallocated buffers).
    public init(anonymous length: Int) throws(Errno) {
        guard length > 0 else { throw .invalidArgument }
        let address = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let address, address != MAP_FAILED else { throw Errno.current }
        self.base = address
        self.length = length
    }

    deinit { munmap(base, length) }

    public var bytes: UnsafeMutableRawBufferPointer { UnsafeMutableRawBufferPointer(start: base, count: length) }
}

/// Anonymous shared memory with a name for /proc (`memfd_create(2)`).
public enum MemFD {
    public static func create(name: String, size: Int, sealable: Bool = false) throws(Errno) -> FileDescriptor {
        var flags = memx_mfd_cloexec()
        if sealable { flags |= memx_mfd_allow_sealing() }
        let fd = try retryingInterrupts { memx_memfd_create(name, flags) }
        let owned = FileDescriptor(adopting: fd)
        try owned.truncate(to: size)
        return owned
    }
}
