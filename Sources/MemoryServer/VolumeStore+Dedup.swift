import Glibc
import RemoteMem
import Synchronization

/// WRITE on a de-duplicating volume: every page is hashed (outside any lock), then, under the
/// volume's and the index's locks, planned without changing anything, then applied.
///
/// The plan decides for each page where its new content lives:
/// - a frame of the index with the same bytes (hash match confirmed by a byte compare): the
///   page points at it, no frame taken;
/// - the same bytes as an earlier page of this request that needs a frame: they share it;
/// - else a new frame ("slot").
/// The pages' old frames lose a reference each. A frame left with none is *freed*; its bytes
/// may take a slot's content (so overwriting pages nobody else shares needs no new frame and
/// succeeds on a full server, as before de-duplication). Only the slots not covered by freed
/// frames are taken from the arena, all at once: `FULL` if they are not there, and then nothing
/// of the request was applied. A write to a page whose frame others share is copy-on-write: the
/// shared frame is never written in place (its other pages keep their bytes).
///
/// Nothing here allocates: the plan lives in one stack buffer of `WireLimits.pagesPerRequestMax`
/// entries per array.
extension VolumeStore {
    func writeDeduplicated(_ volume: Volume, epoch: UInt64, page: UInt64, count: Int,
                           from source: UnsafeRawBufferPointer) throws(WireStatus) {
        let pagesMax = Int(WireLimits.pagesPerRequestMax)
        // SAFETY: the caller checked that `source` holds count (≤ pagesMax) pages.
        let base = source.baseAddress!
        try withUnsafeTemporaryAllocation(of: PageHash.self, capacity: pagesMax) {
            (hashes: UnsafeMutableBufferPointer<PageHash>) throws(WireStatus) in
            for i in 0..<count { hashes[i] = hasher.hash(base + i * WireLimits.pageSize) }
            try withUnsafeTemporaryAllocation(of: UInt32.self, capacity: DedupWritePlan.scratchEntries) {
                (scratch: UnsafeMutableBufferPointer<UInt32>) throws(WireStatus) in
                var plan = DedupWritePlan(scratch: scratch, pageCount: count, pages: base, hashes: hashes)
                let unused = try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> Int in
                    try state.checkLease(epoch)
                    return try index.withLock { (index: inout FrameIndex) throws(WireStatus) -> Int in
                        plan.decide(state.pages, firstPage: page, index: index, arena: arena)
                        try plan.takeFrames(index: index, arena: arena)
                        plan.apply(to: &state.pages, firstPage: page, index: &index, arena: arena)
                        return plan.freedLeftOver
                    }
                }
                dedupCounters.record(plan)
                // Outside the locks: frames no page points at any more.
                arena.release(UnsafeMutableBufferPointer(rebasing: plan.freed[(plan.freedCount - unused)..<plan.freedCount]))
            }
        }
    }
}

/// The decisions of one WRITE on a de-duplicating volume (see `writeDeduplicated`), in views of
/// one stack buffer. Frames in `old` and `deltaFrame` are stored + 1 where 0 means none.
struct DedupWritePlan {
    static let pagesMax = Int(WireLimits.pagesPerRequestMax)
    /// UInt32 entries the plan needs: 6 per-page or per-slot arrays, and 3 of twice the size.
    static let scratchEntries = 12 * pagesMax
    /// `slot` entry of a page whose content is stored already.
    static let noSlot = UInt32.max

    let pageCount: Int
    let pages: UnsafeRawPointer
    let hashes: UnsafeMutableBufferPointer<PageHash>
    /// Per page: its frame before the write, + 1 (0: unwritten).
    let old: UnsafeMutableBufferPointer<UInt32>
    /// Per page: the stored frame with its content (if `slot` is `noSlot`).
    let target: UnsafeMutableBufferPointer<UInt32>
    /// Per page: the slot (new frame) its content goes to, or `noSlot`.
    let slot: UnsafeMutableBufferPointer<UInt32>
    /// Per slot: the first page with its content, how many pages share it, its frame.
    let slotPage: UnsafeMutableBufferPointer<UInt32>
    let slotShares: UnsafeMutableBufferPointer<UInt32>
    let slotFrame: UnsafeMutableBufferPointer<UInt32>
    /// Share-count changes of stored frames: frame + 1 and the change (as a bit pattern).
    let deltaFrame: UnsafeMutableBufferPointer<UInt32>
    let deltaValue: UnsafeMutableBufferPointer<UInt32>
    /// Frames left with no page.
    let freed: UnsafeMutableBufferPointer<UInt32>

    private(set) var slots = 0
    private(set) var deltas = 0
    private(set) var freedCount = 0
    /// Freed frames not reused for a slot: the arena gets them back.
    var freedLeftOver: Int { max(0, freedCount - slots) }
    /// Pages whose content was stored already (in the index or earlier in the request).
    private(set) var duplicatePages = 0
    /// Candidates whose hash matched and whose bytes did not.
    private(set) var collisions = 0
    /// Pages that pointed at a shared frame and now point elsewhere.
    private(set) var copiesOnWrite = 0

    init(scratch: UnsafeMutableBufferPointer<UInt32>, pageCount: Int, pages: UnsafeRawPointer,
         hashes: UnsafeMutableBufferPointer<PageHash>) {
        precondition(pageCount >= 1 && pageCount <= Self.pagesMax && scratch.count >= Self.scratchEntries)
        let n = Self.pagesMax
        func view(_ start: Int, _ count: Int) -> UnsafeMutableBufferPointer<UInt32> {
            UnsafeMutableBufferPointer(rebasing: scratch[start..<(start + count)])
        }
        self.pageCount = pageCount
        self.pages = pages
        self.hashes = hashes
        old = view(0, n)
        target = view(n, n)
        slot = view(2 * n, n)
        slotPage = view(3 * n, n)
        slotShares = view(4 * n, n)
        slotFrame = view(5 * n, n)
        deltaFrame = view(6 * n, 2 * n)
        deltaValue = view(8 * n, 2 * n)
        freed = view(10 * n, 2 * n)
    }

    /// Page `i` of the request.
    private func page(_ i: Int) -> UnsafeRawPointer { pages + i * WireLimits.pageSize }

    /// Decides where each page's content goes and which frames end with no page; changes nothing.
    mutating func decide(_ map: [UInt64: UInt32], firstPage: UInt64, index: borrowing FrameIndex, arena: PageArena) {
        for i in 0..<pageCount {
            old[i] = map[firstPage + UInt64(i)].map { $0 + 1 } ?? 0
            if let stored = index.find(hashes[i], page: page(i), in: arena, collisions: &collisions) {
                target[i] = stored
                slot[i] = Self.noSlot
                duplicatePages += 1
            } else if let earlier = earlierSlot(for: i) {
                slot[i] = UInt32(earlier)
                slotShares[earlier] += 1
                duplicatePages += 1
            } else {
                slot[i] = UInt32(slots)
                slotPage[slots] = UInt32(i)
                slotShares[slots] = 1
                slots += 1
            }
        }
        for i in 0..<pageCount {
            let unchanged = slot[i] == Self.noSlot && old[i] == target[i] + 1
            if unchanged { continue }
            if old[i] != 0 {
                if index.shareCount(old[i] - 1) > 1 { copiesOnWrite += 1 }
                addDelta(old[i] - 1, -1)
            }
            if slot[i] == Self.noSlot { addDelta(target[i], +1) }
        }
        for d in 0..<deltas {
            let frame = deltaFrame[d] - 1
            if Int(index.shareCount(frame)) + Int(Int32(bitPattern: deltaValue[d])) == 0 {
                freed[freedCount] = frame
                freedCount += 1
            }
        }
    }

    /// The slot an earlier page with the same bytes as page `i` fills, if any.
    private func earlierSlot(for i: Int) -> Int? {
        for s in 0..<slots {
            let first = Int(slotPage[s])
            if hashes[first] == hashes[i] && memcmp(page(first), page(i), WireLimits.pageSize) == 0 { return s }
        }
        return nil
    }

    private mutating func addDelta(_ frame: UInt32, _ change: Int32) {
        for d in 0..<deltas where deltaFrame[d] == frame + 1 {
            deltaValue[d] = UInt32(bitPattern: Int32(bitPattern: deltaValue[d]) + change)
            return
        }
        deltaFrame[deltas] = frame + 1
        deltaValue[deltas] = UInt32(bitPattern: change)
        deltas += 1
    }

    /// Gives every slot a frame: freed ones first, then new ones from the arena, all or none
    /// (`FULL`: nothing was changed).
    func takeFrames(index: borrowing FrameIndex, arena: PageArena) throws(WireStatus) {
        let reused = min(slots, freedCount)
        for s in 0..<reused { slotFrame[s] = freed[s] }
        guard arena.allocate(into: UnsafeMutableBufferPointer(rebasing: slotFrame[reused..<slots])) else { throw .full }
    }

    /// Applies the plan: share counts, freed frames out of the index, slots written and
    /// indexed, the volume's map updated.
    func apply(to map: inout [UInt64: UInt32], firstPage: UInt64, index: inout FrameIndex, arena: PageArena) {
        for d in 0..<deltas {
            let frame = deltaFrame[d] - 1
            let change = Int(Int32(bitPattern: deltaValue[d]))
            if Int(index.shareCount(frame)) + change == 0 {
                index.remove(frame)
            } else if change != 0 {
                index.adjust(frame, by: change)
            }
        }
        for s in 0..<slots {
            let first = Int(slotPage[s])
            arena.store(frame: slotFrame[s], from: page(first))
            index.insert(slotFrame[s], hash: hashes[first])
            if slotShares[s] > 1 { index.adjust(slotFrame[s], by: Int(slotShares[s]) - 1) }
        }
        for i in 0..<pageCount {
            map[firstPage + UInt64(i)] = slot[i] == Self.noSlot ? target[i] : slotFrame[Int(slot[i])]
        }
    }
}
