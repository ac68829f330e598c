import LinuxSystem
import RemoteMem

/// memx-server's de-duplication index: per arena frame, how many volume pages share it and the
/// hash of its content; per hash, the frames holding that content (MEMX.md §6).
///
/// A frame in the index is *shared content*: any page of a de-duplicating volume may point at
/// it, so its bytes never change while it is indexed (a write to one of its pages goes to
/// another frame: copy-on-write). It leaves the index when its last page lets go, and only then
/// may its bytes be reused. Frames of volumes that do not de-duplicate are never indexed.
///
/// Layout: a record of 32 bytes per frame (hash, share count, chain links) and a bucket array
/// (a power of two of 4-byte chain heads, at least as many as frames), both reserved once as
/// address space and committed only as touched, so an idle 64 GiB server costs nothing and a
/// full one about 0.9 % of its memory. Chains are doubly linked through the records, so a frame
/// leaves its chain in O(1); a lookup compares at most `DedupLimits.candidatesComparedMax`
/// frames byte by byte, so even a flood of colliding pages costs a bounded amount per write.
///
/// Not thread-safe: `VolumeStore` keeps it behind a lock (lock order: table, volume, index,
/// arena).
struct FrameIndex: ~Copyable {
    /// One frame's entry. Links hold frame + 1 (0: none), so zeroed memory is an empty record.
    private struct Record {
        var hashLow: UInt64
        var hashHigh: UInt64
        var next: UInt32
        var previous: UInt32
        var shareCount: UInt32
        var bucket: UInt32
    }

    private static let recordBytes = MemoryLayout<Record>.stride

    let capacityFrames: Int
    private let records: MemoryReservation
    private let buckets: MemoryReservation
    private let bucketMask: UInt64

    /// Frames in the index (distinct contents stored for de-duplicating volumes).
    private(set) var indexedFrames = 0
    /// Frames two or more pages point at.
    private(set) var sharedFrames = 0
    /// Pages of de-duplicating volumes, i.e. the sum of every indexed frame's share count.
    private(set) var references = 0

    init(capacityFrames: Int) throws(MemoryServerError) {
        precondition(capacityFrames >= 1 && capacityFrames <= PageArena.capacityFramesMax)
        self.capacityFrames = capacityFrames
        var bucketCount = 1
        while bucketCount < capacityFrames { bucketCount <<= 1 }
        bucketMask = UInt64(bucketCount - 1)
        let recordsLength = Self.roundedToPages(capacityFrames * Self.recordBytes)
        let bucketsLength = Self.roundedToPages(bucketCount * MemoryLayout<UInt32>.stride)
        let records = try Self.reserve(recordsLength)
        let buckets = try Self.reserve(bucketsLength)
        // SAFETY: both reservations are fresh, zero-filled, and large enough for the counts
        // bound; zero bytes are a valid Record and a valid empty head. Binding touches nothing.
        records.base.bindMemory(to: Record.self, capacity: capacityFrames)
        buckets.base.bindMemory(to: UInt32.self, capacity: bucketCount)
        self.records = records
        self.buckets = buckets
    }

    private static func reserve(_ length: Int) throws(MemoryServerError) -> MemoryReservation {
        do {
            return try MemoryReservation(length: length)
        } catch {
            throw .system("reserving \(ByteSize.describe(UInt64(length))) for the de-duplication index", error)
        }
    }

    private static func roundedToPages(_ bytes: Int) -> Int { (bytes + 4095) / 4096 * 4096 }

    // MARK: - Lookups

    /// How many pages point at `frame` (0: not indexed).
    func shareCount(_ frame: UInt32) -> UInt32 { record(frame).pointee.shareCount }

    /// The indexed frame whose bytes equal the page at `page` (whose hash is `hash`), or nil.
    /// Compares at most `DedupLimits.candidatesComparedMax` candidates with equal hashes byte by
    /// byte; `collisions` counts candidates whose hash matched but whose bytes did not.
    func find(_ hash: PageHash, page: UnsafeRawPointer, in arena: PageArena, collisions: inout Int) -> UInt32? {
        var link = bucketHead(bucket(of: hash)).pointee
        var compared = 0
        while link != 0 && compared < DedupLimits.candidatesComparedMax {
            let frame = link - 1
            let entry = record(frame).pointee
            if entry.hashLow == hash.low && entry.hashHigh == hash.high {
                if arena.contentEquals(frame: frame, page) { return frame }
                collisions += 1
                compared += 1
            }
            link = entry.next
        }
        return nil
    }

    /// True if `frame` is in the chain of `hash` with that hash recorded (the audit's check;
    /// walks the whole chain).
    func isFiled(_ frame: UInt32, under hash: PageHash) -> Bool {
        var link = bucketHead(bucket(of: hash)).pointee
        while link != 0 {
            let entry = record(link - 1).pointee
            if link - 1 == frame { return entry.hashLow == hash.low && entry.hashHigh == hash.high }
            link = entry.next
        }
        return false
    }

    // MARK: - Changes

    /// Files `frame` (not indexed; its bytes already written) under `hash` with one page
    /// pointing at it.
    mutating func insert(_ frame: UInt32, hash: PageHash) {
        let entry = record(frame)
        precondition(entry.pointee.shareCount == 0, "frame \(frame) is indexed already")
        let bucket = bucket(of: hash)
        let head = bucketHead(bucket)
        entry.pointee = Record(hashLow: hash.low, hashHigh: hash.high, next: head.pointee, previous: 0, shareCount: 1,
                               bucket: bucket)
        if head.pointee != 0 { record(head.pointee - 1).pointee.previous = frame + 1 }
        head.pointee = frame + 1
        indexedFrames += 1
        references += 1
    }

    /// Changes `frame`'s share count by `delta` (which must leave it at 1 or more: a frame's
    /// last page lets go with `remove`).
    mutating func adjust(_ frame: UInt32, by delta: Int) {
        let entry = record(frame)
        let before = Int(entry.pointee.shareCount)
        let after = before + delta
        precondition(before >= 1 && after >= 1 && after <= Int(UInt32.max), "share count of frame \(frame): \(before) + \(delta)")
        entry.pointee.shareCount = UInt32(after)
        if before == 1 && after > 1 { sharedFrames += 1 }
        if before > 1 && after == 1 { sharedFrames -= 1 }
        references += delta
    }

    /// One page lets go of `frame`; true if it was the last (the frame left the index and its
    /// bytes may be reused or freed).
    mutating func release(_ frame: UInt32) -> Bool {
        if shareCount(frame) > 1 {
            adjust(frame, by: -1)
            return false
        }
        remove(frame)
        return true
    }

    /// Takes `frame` out of the index whatever its share count (its pages are all gone).
    mutating func remove(_ frame: UInt32) {
        let entry = record(frame)
        let count = Int(entry.pointee.shareCount)
        precondition(count >= 1, "frame \(frame) is not indexed")
        let next = entry.pointee.next
        let previous = entry.pointee.previous
        if previous != 0 {
            record(previous - 1).pointee.next = next
        } else {
            bucketHead(entry.pointee.bucket).pointee = next
        }
        if next != 0 { record(next - 1).pointee.previous = previous }
        entry.pointee = Record(hashLow: 0, hashHigh: 0, next: 0, previous: 0, shareCount: 0, bucket: 0)
        indexedFrames -= 1
        if count > 1 { sharedFrames -= 1 }
        references -= count
    }

    // MARK: - Storage

    private func bucket(of hash: PageHash) -> UInt32 { UInt32(truncatingIfNeeded: (hash.low ^ hash.high) & bucketMask) }

    private func record(_ frame: UInt32) -> UnsafeMutablePointer<Record> {
        precondition(Int(frame) < capacityFrames, "frame \(frame) outside the index")
        // SAFETY: the reservation holds capacityFrames records (rounded up to whole pages),
        // frame < capacityFrames was checked above, and zeroed memory is a valid Record.
        return (records.base + Int(frame) * Self.recordBytes).assumingMemoryBound(to: Record.self)
    }

    private func bucketHead(_ bucket: UInt32) -> UnsafeMutablePointer<UInt32> {
        precondition(UInt64(bucket) <= bucketMask, "bucket \(bucket) outside the index")
        // SAFETY: the reservation holds bucketMask + 1 heads; bucket <= bucketMask (above).
        return (buckets.base + Int(bucket) * MemoryLayout<UInt32>.stride).assumingMemoryBound(to: UInt32.self)
    }
}
