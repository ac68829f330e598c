/// The page → frame map of a `PageCache`: open addressing with linear probing and
/// backward-shift deletion (no tombstones, so lookups never slow down with churn), sized once at
/// start to at least twice the frame count, so it never grows and never allocates afterwards.
///
/// Not thread-safe: the cache's lock guards it.
struct PageIndex: ~Copyable {
    /// The key of an empty slot (no page has this index: volumes are at most 2^52 pages).
    static let emptyKey = UInt64.max

    private let keys: UnsafeMutablePointer<UInt64>
    private let values: UnsafeMutablePointer<Int32>
    private let mask: Int
    private(set) var count = 0

    /// An index for up to `capacity` entries (load factor at most 1/2).
    init(capacity: Int) {
        var slots = 16
        while slots < capacity * 2 { slots <<= 1 }
        mask = slots - 1
        keys = .allocate(capacity: slots)
        keys.initialize(repeating: Self.emptyKey, count: slots)
        values = .allocate(capacity: slots)
        values.initialize(repeating: -1, count: slots)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    @inline(__always)
    private func home(_ page: UInt64) -> Int {
        // Fibonacci hashing: consecutive pages spread over the table.
        Int(truncatingIfNeeded: (page &* 0x9E37_79B9_7F4A_7C15) >> 20) & mask
    }

    /// The frame holding `page`, or nil.
    func find(_ page: UInt64) -> Int? {
        var slot = home(page)
        while true {
            let key = keys[slot]
            if key == page { return Int(values[slot]) }
            if key == Self.emptyKey { return nil }
            slot = (slot + 1) & mask
        }
    }

    /// Records that `frame` holds `page` (which must not be present).
    mutating func insert(_ page: UInt64, frame: Int) {
        precondition(page != Self.emptyKey && count <= mask / 2, "page index full")
        var slot = home(page)
        while keys[slot] != Self.emptyKey {
            precondition(keys[slot] != page, "page \(page) indexed twice")
            slot = (slot + 1) & mask
        }
        keys[slot] = page
        values[slot] = Int32(frame)
        count += 1
    }

    /// Forgets `page` (if present), shifting later entries of its probe run back so every key
    /// stays reachable from its home slot.
    mutating func remove(_ page: UInt64) {
        var slot = home(page)
        while keys[slot] != page {
            if keys[slot] == Self.emptyKey { return }
            slot = (slot + 1) & mask
        }
        count -= 1
        var hole = slot
        var next = (hole + 1) & mask
        while keys[next] != Self.emptyKey {
            let wanted = home(keys[next])
            // Move `next` into the hole unless its home lies cyclically in (hole, next].
            let stays = hole <= next ? (hole < wanted && wanted <= next) : (hole < wanted || wanted <= next)
            if !stays {
                keys[hole] = keys[next]
                values[hole] = values[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        keys[hole] = Self.emptyKey
        values[hole] = -1
    }
}
