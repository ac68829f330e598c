import LinuxSystem

/// An immutable snapshot of the guest's memory layout: the mapped regions, sorted by guest
/// address, none overlapping.
///
/// The control thread builds a new snapshot for every SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG
/// and publishes it; data threads pick it up between batches. A request keeps the snapshot it
/// started with until it completes, so its buffers cannot be unmapped under it.
public final class GuestMemoryMap: Sendable {
    public let regions: [GuestMemoryRegion]

    public static let empty = GuestMemoryMap(validated: [])

    private init(validated regions: [GuestMemoryRegion]) { self.regions = regions }

    /// A map of `regions`; overlapping guest ranges are refused.
    public convenience init(regions: [GuestMemoryRegion]) throws(GuestMemoryError) {
        let sorted = regions.sorted { $0.layout.guestAddress < $1.layout.guestAddress }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.layout.guestEnd > b.layout.guestAddress.rawValue {
            throw .invalidRegion("\(a.layout) overlaps \(b.layout)")
        }
        self.init(validated: sorted)
    }

    /// A new snapshot with `region` added.
    public func adding(_ region: GuestMemoryRegion) throws(GuestMemoryError) -> GuestMemoryMap {
        try GuestMemoryMap(regions: regions + [region])
    }

    /// A new snapshot without the region REM_MEM_REG names, or nil if no region matches.
    public func removing(_ layout: MemoryRegionLayout) -> GuestMemoryMap? {
        guard let index = regions.firstIndex(where: { $0.layout.identifies(layout) }) else { return nil }
        var remaining = regions
        remaining.remove(at: index)
        return GuestMemoryMap(validated: remaining)
    }

    public var isEmpty: Bool { regions.isEmpty }

    /// The highest guest-physical address covered, exclusive (sizes the dirty log).
    public var guestEnd: UInt64 { regions.map(\.layout.guestEnd).max() ?? 0 }

    @inline(__always)
    func region(containing address: UInt64) -> GuestMemoryRegion? {
        // Guests have a handful of regions (2 on q35 with < 3 GiB); a linear scan beats a search.
        for region in regions where region.contains(address) { return region }
        return nil
    }

    /// True if every byte of `[address, address + length)` is guest RAM (possibly across
    /// adjacent regions). A zero-length range is valid if its address is.
    public func contains(_ address: GuestAddress, length: UInt64) -> Bool {
        var cursor = address.rawValue
        guard length <= UInt64.max - cursor else { return false }
        let end = cursor + length
        repeat {
            guard let region = region(containing: cursor) else { return false }
            cursor = min(end, region.layout.guestEnd)
        } while cursor < end
        return true
    }

    /// Calls `body` with host views of `[address, address + length)`, one per region crossed,
    /// in order. Throws `outOfRange` (before calling `body` at all) if any byte is not RAM.
    @inline(__always)
    public func withHostBuffers<E: Error>(
        _ address: GuestAddress, length: UInt64,
        _ body: (UnsafeMutableRawBufferPointer) throws(E) -> Void
    ) throws(GuestMemoryAccessError<E>) {
        guard contains(address, length: length) else {
            throw .memory(.outOfRange(address, length: length))
        }
        var cursor = address.rawValue
        let end = cursor + length
        while cursor < end {
            let region = region(containing: cursor)!
            let offset = cursor - region.layout.guestAddress.rawValue
            let count = min(end, region.layout.guestEnd) - cursor
            // SAFETY: [offset, offset + count) lies inside the region, checked by `contains`.
            let buffer = UnsafeMutableRawBufferPointer(start: region.host + Int(offset), count: Int(count))
            do {
                try body(buffer)
            } catch {
                throw .body(error)
            }
            cursor += count
        }
    }

    /// Copies guest bytes at `address` into `destination`.
    public func read(_ address: GuestAddress, into destination: UnsafeMutableRawBufferPointer) throws(GuestMemoryError) {
        var done = 0
        do {
            try withHostBuffers(address, length: UInt64(destination.count)) { (piece: UnsafeMutableRawBufferPointer) throws(Never) in
                destination.baseAddress!.advanced(by: done).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
                done += piece.count
            }
        } catch {
            if case .memory(let e) = error { throw e }
        }
    }

    /// Copies `source` into guest memory at `address` (no dirty logging: use `GuestMemoryWriter`
    /// on the data path).
    public func write(_ address: GuestAddress, from source: UnsafeRawBufferPointer) throws(GuestMemoryError) {
        var done = 0
        do {
            try withHostBuffers(address, length: UInt64(source.count)) { (piece: UnsafeMutableRawBufferPointer) throws(Never) in
                piece.baseAddress!.copyMemory(from: source.baseAddress!.advanced(by: done), byteCount: piece.count)
                done += piece.count
            }
        } catch {
            if case .memory(let e) = error { throw e }
        }
    }

    /// Reads a little-endian integer at `address`.
    public func load<T: FixedWidthInteger>(_ type: T.Type, at address: GuestAddress) throws(GuestMemoryError) -> T {
        var value: T = 0
        try withUnsafeMutableBytes(of: &value) { (raw) throws(GuestMemoryError) in try read(address, into: raw) }
        return T(littleEndian: value)
    }

    /// Translates a frontend virtual address (SET_VRING_ADDR) to a guest address; the whole
    /// `length` must sit in one region.
    public func guestAddress(of address: FrontendAddress, length: UInt64) throws(GuestMemoryError) -> GuestAddress {
        for region in regions {
            let base = region.layout.frontendAddress.rawValue
            if address.rawValue >= base, address.rawValue - base < region.layout.size,
               length <= region.layout.size - (address.rawValue - base) {
                return GuestAddress(region.layout.guestAddress.rawValue + (address.rawValue - base))
            }
        }
        throw .unmappedFrontendAddress(address, length: length)
    }

    /// A view of `length` bytes of ring memory at `address`, which must lie in one region.
    public func ring(at address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> RingMemory {
        guard let region = region(containing: address.rawValue),
              length <= region.layout.guestEnd - address.rawValue
        else { throw .outOfRange(address, length: length) }
        let offset = Int(address.rawValue - region.layout.guestAddress.rawValue)
        // SAFETY: checked above that [offset, offset + length) lies inside `region`.
        return RingMemory(base: region.host + offset, length: Int(length), region: region)
    }
}

/// An error from `withHostBuffers`: either the range was not guest memory, or the body threw.
public enum GuestMemoryAccessError<Body: Error>: Error {
    case memory(GuestMemoryError)
    case body(Body)
}
