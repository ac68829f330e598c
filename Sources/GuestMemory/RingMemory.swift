import CMemxShims

/// Bounds-checked, ordered access to a piece of guest memory shared with a running driver:
/// descriptor tables, avail and used rings, inflight regions.
///
/// Orderings follow virtio-queue: the device reads `avail->idx` with acquire before it reads
/// ring entries; it writes used elements and then `used->idx` with release; and a full fence
/// separates publishing `used->idx` from reading `used_event` / `avail->flags`.
public struct RingMemory: @unchecked Sendable {
    // SAFETY: `base` points at `length` bytes inside `region`'s mapping, and `region` is kept
    // alive by this value. Every accessor checks its offset against `length` (a failed check
    // is a bug in our own ring arithmetic, not guest input: offsets are computed from a queue
    // size we validated).
    @usableFromInline let base: UnsafeMutableRawPointer
    public let length: Int
    let region: AnyObject?

    init(base: UnsafeMutableRawPointer, length: Int, region: AnyObject?) {
        self.base = base
        self.length = length
        self.region = region
    }

    @inlinable @inline(__always)
    func pointer(_ offset: Int, _ size: Int) -> UnsafeMutableRawPointer {
        precondition(offset >= 0 && offset + size <= length, "ring access out of bounds")
        return base + offset
    }

    @inlinable @inline(__always)
    public func loadAcquireU16(_ offset: Int) -> UInt16 { UInt16(littleEndian: memx_load_acquire_u16(pointer(offset, 2))) }

    @inlinable @inline(__always)
    public func storeReleaseU16(_ offset: Int, _ value: UInt16) { memx_store_release_u16(pointer(offset, 2), value.littleEndian) }

    @inlinable @inline(__always)
    public func loadU16(_ offset: Int) -> UInt16 { UInt16(littleEndian: memx_load_relaxed_u16(pointer(offset, 2))) }

    @inlinable @inline(__always)
    public func storeU16(_ offset: Int, _ value: UInt16) { memx_store_relaxed_u16(pointer(offset, 2), value.littleEndian) }

    @inlinable @inline(__always)
    public func loadU32(_ offset: Int) -> UInt32 { UInt32(littleEndian: pointer(offset, 4).loadUnaligned(as: UInt32.self)) }

    @inlinable @inline(__always)
    public func storeU32(_ offset: Int, _ value: UInt32) { pointer(offset, 4).storeBytes(of: value.littleEndian, as: UInt32.self) }

    @inlinable @inline(__always)
    public func loadU64(_ offset: Int) -> UInt64 { UInt64(littleEndian: pointer(offset, 8).loadUnaligned(as: UInt64.self)) }

    @inlinable @inline(__always)
    public func storeU64(_ offset: Int, _ value: UInt64) { pointer(offset, 8).storeBytes(of: value.littleEndian, as: UInt64.self) }

    @inlinable @inline(__always)
    public func loadU8(_ offset: Int) -> UInt8 { pointer(offset, 1).load(as: UInt8.self) }

    @inlinable @inline(__always)
    public func storeU8(_ offset: Int, _ value: UInt8) { pointer(offset, 1).storeBytes(of: value, as: UInt8.self) }

    /// Zeroes the whole view.
    public func zero() { base.initializeMemory(as: UInt8.self, repeating: 0, count: length) }

    /// Full barrier (SeqCst) between publishing `used->idx` and reading the driver's event index.
    @inline(__always) public static func fullFence() { memx_fence_seq_cst() }
    /// Release barrier: everything before it is visible before anything after it.
    @inline(__always) public static func releaseFence() { memx_fence_release() }
    /// Acquire barrier.
    @inline(__always) public static func acquireFence() { memx_fence_acquire() }
}
