import GuestMemory
import Virtio

/// Fake guest RAM for tests and benchmarks: anonymous mappings posing as guest memory regions
/// at chosen guest-physical bases, as vm-memory's `GuestMemoryMmap::from_ranges` (style rule 13).
///
/// `FakeGuestMemory(regions: [(base: 0x0, size: 0xa0000), (base: 0xc0000, size: 4 << 20)])`
/// gives the q35 layout below 4 GiB: low RAM, the VGA/ROM hole, then the rest. A bump allocator
/// hands out guest addresses for rings, buffers and indirect tables, region by region; it never
/// frees (make a new fake per test, or call `resetAllocator`).
///
/// Not thread-safe: one test owns one fake. The bytes themselves may be shared with a
/// `SplitQueue` on another thread through `map`, like real guest memory.
public final class FakeGuestMemory {
    /// A region to create: its guest-physical base and size in bytes.
    public typealias RegionSpec = (base: UInt64, size: UInt64)

    /// The regions as the backend sees them.
    public let map: GuestMemoryMap
    /// The specs the regions were made from, sorted by base.
    public let specs: [RegionSpec]
    /// Where the allocator continues, per region (index into `specs`).
    private var allocationCursors: [UInt64]

    /// Maps one anonymous region per spec. Throws if a region cannot be mapped or two overlap.
    public init(regions: [RegionSpec]) throws(GuestMemoryError) {
        precondition(!regions.isEmpty, "fake guest memory needs at least one region")
        let sorted = regions.sorted { $0.base < $1.base }
        var made: [GuestMemoryRegion] = []
        for spec in sorted {
            made.append(try GuestMemoryRegion(anonymousAt: GuestAddress(spec.base), size: spec.size))
        }
        map = try GuestMemoryMap(regions: made)
        specs = sorted
        allocationCursors = sorted.map(\.base)
    }

    /// One region of `size` bytes at guest address `base`.
    public convenience init(base: UInt64 = 0, size: UInt64) throws(GuestMemoryError) {
        try self.init(regions: [(base: base, size: size)])
    }

    /// A writer with no dirty log (what the data path uses when migration is off).
    public var writer: GuestMemoryWriter { GuestMemoryWriter(memory: map, log: nil) }

    /// True if `[address, address + length)` is covered by the regions. Computed from `specs`
    /// alone, independently of `GuestMemoryMap`, so tests can use it as an oracle.
    public func specsCover(_ address: UInt64, length: UInt64) -> Bool {
        guard length <= UInt64.max - address else { return false }
        var cursor = address
        let end = address + length
        repeat {
            guard let spec = specs.first(where: { cursor >= $0.base && cursor - $0.base < $0.size }) else {
                return false
            }
            cursor = min(end, spec.base + spec.size)
        } while cursor < end
        return true
    }

    // MARK: - Allocation

    /// Reserves `size` bytes aligned to `alignment` (a power of two) in the first region with
    /// room, or in region `regionIndex` if given. Traps when nothing fits: the test asked for
    /// more than it made, a bug in the test.
    public func allocate(_ size: UInt64, alignment: UInt64 = 16, inRegion regionIndex: Int? = nil) -> GuestAddress {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        let candidates = regionIndex.map { [$0] } ?? Array(specs.indices)
        for index in candidates {
            let spec = specs[index]
            let start = (allocationCursors[index] + alignment - 1) & ~(alignment - 1)
            let end = spec.base + spec.size
            if start <= end, size <= end - start {
                allocationCursors[index] = start + size
                return GuestAddress(start)
            }
        }
        preconditionFailure("fake guest memory exhausted: \(size) bytes aligned to \(alignment)")
    }

    /// Forgets every allocation (the bytes are left as they are).
    public func resetAllocator() {
        allocationCursors = specs.map(\.base)
    }

    // MARK: - Bytes

    /// Writes `bytes` at `address`, which must be guest RAM (traps otherwise: a test bug).
    public func write(_ bytes: [UInt8], at address: GuestAddress) {
        // (A typed-throws closure passed to Array.withUnsafeBytes crashes the 6.3 compiler.)
        let failure: GuestMemoryError? = bytes.withUnsafeBytes { raw in
            do throws(GuestMemoryError) { try map.write(address, from: raw) } catch { return error }
            return nil
        }
        if let failure { preconditionFailure("fake guest memory write failed: \(failure)") }
    }

    /// Reads `count` bytes at `address`, which must be guest RAM.
    public func read(_ address: GuestAddress, count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        let failure: GuestMemoryError? = bytes.withUnsafeMutableBytes { raw in
            do throws(GuestMemoryError) { try map.read(address, into: raw) } catch { return error }
            return nil
        }
        if let failure { preconditionFailure("fake guest memory read failed: \(failure)") }
        return bytes
    }

    /// Writes `value` little-endian at `address`.
    public func store<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) {
        write(withUnsafeBytes(of: value.littleEndian) { Array($0) }, at: address)
    }

    /// Reads a little-endian `T` at `address`.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at address: GuestAddress) -> T {
        let bytes = read(address, count: MemoryLayout<T>.size)
        var value: T = 0
        withUnsafeMutableBytes(of: &value) { raw in raw.copyBytes(from: bytes) }
        return T(littleEndian: value)
    }

    /// Sets `count` bytes at `address` to `byte`.
    public func fill(_ address: GuestAddress, count: Int, with byte: UInt8) {
        write([UInt8](repeating: byte, count: count), at: address)
    }

    /// Allocates a buffer holding `bytes` and returns its address.
    public func place(_ bytes: [UInt8], alignment: UInt64 = 16) -> GuestAddress {
        let address = allocate(UInt64(max(bytes.count, 1)), alignment: alignment)
        write(bytes, at: address)
        return address
    }

    // MARK: - Virtio helpers

    /// Writes descriptors as a table (16 bytes each, little-endian) at `address`: used for
    /// indirect tables, including hostile ones.
    public func writeDescriptorTable(_ descriptors: [Descriptor], at address: GuestAddress) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(descriptors.count * Descriptor.sizeBytes)
        for d in descriptors {
            withUnsafeBytes(of: d.address.littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: d.length.littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: d.flags.littleEndian) { bytes.append(contentsOf: $0) }
            withUnsafeBytes(of: d.next.littleEndian) { bytes.append(contentsOf: $0) }
        }
        write(bytes, at: address)
    }

    /// Allocates room for a split queue of `size` entries (4 KiB aligned, the standard layout).
    public func allocateQueueLayout(size: UInt16, inRegion regionIndex: Int? = nil) -> SplitQueueLayout {
        let base = allocate(SplitQueueDriver.ringBytes(size: size), alignment: 4096, inRegion: regionIndex)
        return SplitQueueDriver.layout(size: size, base: base)
    }

    /// Allocates a split queue of `size` entries and returns a driver for it (rings zeroed).
    public func makeDriver(size: UInt16, eventIndex: Bool, inRegion regionIndex: Int? = nil) -> SplitQueueDriver {
        let layout = allocateQueueLayout(size: size, inRegion: regionIndex)
        do {
            return try SplitQueueDriver(layout: layout, memory: map, eventIndex: eventIndex)
        } catch {
            preconditionFailure("fake driver setup failed: \(error)")
        }
    }
}
