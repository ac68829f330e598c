import Glibc
import CMemxShims
import LinuxSystem

/// The embedded memory pool: a volume's pages in a sparse file in shared memory (tmpfs, by
/// default `/dev/shm/memx-<volume>.pool`), so the disk outlives the `memx-vhost` process and a
/// restarted backend serves the same bytes.
///
/// - Unwritten pages are holes: they read as zeros and cost no memory. Reads use `pread`, which
///   returns zeros for holes without allocating (a read fault through a mapping would allocate).
/// - Writes copy into a shared mapping of the file (no system call on the hot path).
/// - DISCARD and WRITE_ZEROES punch holes (`fallocate(PUNCH_HOLE)`), giving memory back.
/// - FLUSH has nothing to do: a completed write is already in the shared page cache, which
///   survives the process (not the host: this pool is memory).
/// - One process at a time: an exclusive `flock` on the file, released by the kernel if the
///   process dies, so `kill -9` and restart just works.
///
/// Concurrent calls from several queue threads are safe: each is a copy or a system call on a
/// disjoint or guest-ordered range, as on a real disk.
public final class SharedMemoryPageStore: PageStore {
    /// The file header: magic, format version, page size, capacity; data starts one page in.
    static let magic: UInt64 = 0x4C4F_4F50_584D_454D  // "MEMXPOOL"
    static let formatVersion: UInt32 = 1
    static let headerBytes: UInt64 = PageStoreLimits.pageSize

    public let capacityBytes: UInt64
    public let path: String
    private let file: SharedFileDescriptor
    private let data: MemoryMapping

    /// The pool file for `volume` in `directory`.
    public static func path(directory: String, volume: String) -> String {
        directory + "/memx-" + volume + ".pool"
    }

    /// Opens the pool of `volume`, creating it with `capacityBytes` if it does not exist. An
    /// existing pool of another size is an error (never a silent resize).
    public init(directory: String = "/dev/shm", volume: String, capacityBytes: UInt64) throws(PageStoreError) {
        guard capacityBytes > 0, capacityBytes % PageStoreLimits.pageSize == 0,
              capacityBytes <= PageStoreLimits.capacityBytesMax
        else {
            throw .geometryMismatch("volume size \(capacityBytes) must be a positive multiple of 4 KiB up to 64 TiB")
        }
        let path = Self.path(directory: directory, volume: volume)
        self.path = path
        var created = false
        var fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 && errno == ENOENT {
            fd = Glibc.open(path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0o600)
            created = fd >= 0
        }
        guard fd >= 0 else { throw .io(errno: errno, operation: "open \(path)") }
        let owned = FileDescriptor(adopting: fd)
        do {
            try owned.lockExclusive()
        } catch {
            throw .busy("volume '\(volume)' (\(path)) is in use by another process")
        }
        do {
            if created {
                try owned.truncate(to: Int(Self.headerBytes + capacityBytes))
                try Self.writeHeader(owned, capacityBytes: capacityBytes)
            } else {
                try Self.checkHeader(owned, capacityBytes: capacityBytes, path: path)
            }
            data = try MemoryMapping(fd: owned.rawValue, length: Int(capacityBytes), offset: Int(Self.headerBytes))
        } catch let error as Errno {
            if created { unlink(path) }
            throw .io(errno: error.rawValue, operation: "set up \(path)")
        } catch let error as PageStoreError {
            throw error
        } catch {
            throw .corrupt("\(path): \(error)")
        }
        self.capacityBytes = capacityBytes
        self.file = SharedFileDescriptor(owned)
    }

    private static func writeHeader(_ fd: borrowing FileDescriptor, capacityBytes: UInt64) throws(Errno) {
        var header = (magic.littleEndian, formatVersion.littleEndian, UInt32(PageStoreLimits.pageSize).littleEndian,
                      capacityBytes.littleEndian)
        let n = withUnsafeBytes(of: &header) { pwrite(fd.rawValue, $0.baseAddress, $0.count, 0) }
        if n != MemoryLayout.size(ofValue: header) { throw Errno.current }
    }

    private static func checkHeader(_ fd: borrowing FileDescriptor, capacityBytes: UInt64, path: String) throws -> Void {
        var header = (UInt64(0), UInt32(0), UInt32(0), UInt64(0))
        let n = withUnsafeMutableBytes(of: &header) { pread(fd.rawValue, $0.baseAddress, $0.count, 0) }
        guard n == MemoryLayout.size(ofValue: header), UInt64(littleEndian: header.0) == magic else {
            throw PageStoreError.corrupt("\(path) is not a MemX pool file")
        }
        guard UInt32(littleEndian: header.1) == formatVersion, UInt32(littleEndian: header.2) == UInt32(PageStoreLimits.pageSize) else {
            throw PageStoreError.corrupt("\(path) has pool format \(UInt32(littleEndian: header.1)), expected \(formatVersion)")
        }
        let recorded = UInt64(littleEndian: header.3)
        guard recorded == capacityBytes else {
            throw PageStoreError.geometryMismatch(
                "volume at \(path) has \(recorded) bytes, not \(capacityBytes): pass --size \(recorded) or delete the volume")
        }
        guard try fd.size() >= Int(headerBytes + recorded) else {
            throw PageStoreError.corrupt("\(path) is shorter than its recorded size")
        }
    }

    @inline(__always)
    private func check(_ offset: UInt64, _ length: UInt64) throws(PageStoreError) {
        guard offset <= capacityBytes, length <= capacityBytes - offset else {
            throw .outOfRange(offset: offset, length: length)
        }
    }

    public func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(PageStoreError) {
        try check(offset, UInt64(destination.count))
        var done = 0
        while done < destination.count {
            let n = pread(file.rawValue, destination.baseAddress! + done, destination.count - done,
                          off_t(Self.headerBytes + offset) + off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(errno: errno, operation: "pread")
            }
            if n == 0 {
                // Past the end of a (damaged) file: the rest reads as zeros.
                (destination.baseAddress! + done).initializeMemory(as: UInt8.self, repeating: 0, count: destination.count - done)
                return
            }
            done += n
        }
    }

    public func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(PageStoreError) {
        try check(offset, UInt64(source.count))
        // SAFETY: [offset, offset + count) is inside the data mapping, checked above.
        (data.base + Int(offset)).copyMemory(from: source.baseAddress!, byteCount: source.count)
    }

    public func discard(at offset: UInt64, length: UInt64) throws(PageStoreError) {
        try check(offset, length)
        guard length > 0 else { return }
        // On tmpfs, punching a hole frees whole pages and zeroes the partial ones at the edges.
        if memx_punch_hole(file.rawValue, off_t(Self.headerBytes + offset), off_t(length)) != 0 {
            throw .io(errno: errno, operation: "fallocate(PUNCH_HOLE)")
        }
    }

    public func flush() throws(PageStoreError) {}

    public var residentBytes: UInt64 {
        var info = stat()
        guard fstat(file.rawValue, &info) == 0 else { return 0 }
        return UInt64(info.st_blocks) * 512
    }

    /// Deletes the pool of `volume` (the operator's `--delete`).
    public static func remove(directory: String = "/dev/shm", volume: String) throws(PageStoreError) {
        let path = path(directory: directory, volume: volume)
        if unlink(path) != 0 { throw .io(errno: errno, operation: "unlink \(path)") }
    }
}
