import CMemxShims
import LinuxSystem

/// The migration dirty log QEMU hands over with SET_LOG_BASE: one bit per 4 KiB guest page.
///
/// The device sets the bit of every guest page it writes (data buffers, status bytes, used
/// ring) with an atomic OR, because QEMU harvests and clears the bitmap concurrently with xchg
/// (vhost-user spec, "Migration"). Bits past the end of the log are ignored: QEMU sizes the log
/// to cover all of guest RAM, so such a write cannot be guest RAM either.
public final class DirtyLog: Sendable {
    public static let pageSize: UInt64 = 4096
    private let mapping: MemoryMapping

    /// Maps `size` bytes of `fd` at `offset` (the SET_LOG_BASE payload).
    public init(fd: borrowing FileDescriptor, size: UInt64, offset: UInt64) throws(Errno) {
        guard size > 0, size <= 1 << 40, offset <= 1 << 40 else { throw .invalidArgument }
        mapping = try MemoryMapping(fd: fd.rawValue, length: Int(size), offset: Int(offset))
    }

    public var sizeBytes: Int { mapping.length }

    /// Marks every page touched by `[address, address + length)` dirty.
    @inline(__always)
    public func mark(_ address: GuestAddress, length: UInt64) {
        guard length > 0 else { return }
        // The data was written before this call; the release fence orders it before the bits
        // (DPDK puts the same fence before setting the bit).
        memx_fence_release()
        var page = address.rawValue / Self.pageSize
        let (end, overflow) = address.rawValue.addingReportingOverflow(length - 1)
        let last = (overflow ? UInt64.max : end) / Self.pageSize
        let pages = UInt64(mapping.length) * 8
        while page <= last, page < pages {
            // SAFETY: page / 8 < mapping.length, checked by `page < pages`.
            memx_atomic_or_u8(mapping.base + Int(page / 8), UInt8(1) << UInt8(page % 8))
            page += 1
        }
    }

    /// True if the bit of the page holding `address` is set (tests).
    public func isDirty(_ address: GuestAddress) -> Bool {
        let page = address.rawValue / Self.pageSize
        guard page / 8 < UInt64(mapping.length) else { return false }
        return mapping.base.load(fromByteOffset: Int(page / 8), as: UInt8.self) & (1 << UInt8(page % 8)) != 0
    }
}

/// Guest memory as the device writes it: every write is logged when migration logging is on.
///
/// Data-path code writes guest memory only through this type, so no write can miss the log.
public struct GuestMemoryWriter: @unchecked Sendable {
    // SAFETY: both members are immutable Sendable classes; the struct is a pair of references.
    public let memory: GuestMemoryMap
    public let log: DirtyLog?

    public init(memory: GuestMemoryMap, log: DirtyLog?) {
        self.memory = memory
        self.log = log
    }

    /// Copies `source` to `address` and logs it.
    @inline(__always)
    public func write(_ address: GuestAddress, from source: UnsafeRawBufferPointer) throws(GuestMemoryError) {
        try memory.write(address, from: source)
        log?.mark(address, length: UInt64(source.count))
    }

    /// Writes one byte (the virtio-blk status) and logs it.
    @inline(__always)
    public func writeByte(_ address: GuestAddress, _ value: UInt8) throws(GuestMemoryError) {
        var byte = value
        try withUnsafeBytes(of: &byte) { (raw) throws(GuestMemoryError) in try write(address, from: raw) }
    }

    /// Lets `body` fill `[address, address + length)` piece by piece in host memory, then logs
    /// the range (whether or not `body` succeeded: a partial write is still a write).
    @inline(__always)
    public func fill<E: Error>(
        _ address: GuestAddress, length: UInt64,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(GuestMemoryAccessError<E>) {
        defer { log?.mark(address, length: length) }
        try memory.withHostBuffers(address, length: length, body)
    }

    /// Logs a write the caller made through a `RingMemory` view (used ring entries).
    @inline(__always)
    public func logRingWrite(_ address: GuestAddress, length: UInt64) {
        log?.mark(address, length: length)
    }
}
