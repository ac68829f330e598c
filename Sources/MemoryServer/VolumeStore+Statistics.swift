import RemoteMem
import Synchronization

/// De-duplication numbers (DEDUP_STAT, VOLUME_DEDUP_STAT, metrics) and the consistency audit
/// the fuzz tests run after every request.
extension VolumeStore {
    /// DEDUP_STAT: the server's sharing now and its totals. Volumes are visited one at a time,
    /// so under load the numbers are a moment's, not one instant's.
    public func dedupStatistics() -> DedupStatistics {
        var logical: UInt64 = 0
        var privatePages: UInt64 = 0
        for volume in allVolumes() {
            let pages = volume.state.withLock { UInt64($0.pages.count) }
            logical += pages
            if !volume.deduplicates { privatePages += pages }
        }
        let (indexed, shared) = index.withLock { (UInt64($0.indexedFrames), UInt64($0.sharedFrames)) }
        let counters = dedupCounters
        return DedupStatistics(hashAlgorithm: DedupMessages.hashMX128, logicalPages: logical,
                               storedFrames: UInt64(arena.usedFrames), indexedFrames: indexed, sharedFrames: shared,
                               privatePages: privatePages, pagesHashed: counters.pagesHashed,
                               duplicatePages: counters.duplicatePages, hashCollisions: counters.hashCollisions,
                               copiesOnWrite: counters.copiesOnWrite, clonedPages: counters.clonedPages)
    }

    /// VOLUME_DEDUP_STAT of `name`: its policy, pages, shared pages and fair share of memory.
    public func volumeDedupStatistics(name: String) throws(WireStatus) -> VolumeDedupStatistics {
        let volume = try lookUp(name: name)
        return try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> VolumeDedupStatistics in
            guard !state.deleted else { throw .notFound }
            let logical = UInt64(state.pages.count)
            guard volume.deduplicates else {
                return VolumeDedupStatistics(flags: DedupMessages.volumeFlagNoDedup, logicalPages: logical, sharedPages: 0,
                                             chargedBytes: logical * UInt64(WireLimits.pageSize))
            }
            var shared: UInt64 = 0
            var charged = 0.0
            index.withLock { index in
                for frame in state.pages.values {
                    let count = index.shareCount(frame)
                    if count > 1 { shared += 1 }
                    charged += Double(WireLimits.pageSize) / Double(max(count, 1))
                }
            }
            return VolumeDedupStatistics(flags: 0, logicalPages: logical, sharedPages: shared, chargedBytes: UInt64(charged.rounded()))
        }
    }

    /// Checks that the index agrees with the volumes: every indexed frame's share count is the
    /// number of pages of de-duplicating volumes pointing at it, every such page points at an
    /// indexed frame whose bytes hash to its record, private frames have one page each and are
    /// not indexed, and the arena lends exactly the frames pointed at. Returns the first
    /// disagreement, or nil. For tests: call it while no request runs.
    public func auditSharing() -> String? {
        var references: [UInt32: Int] = [:]
        var privateFrames = Set<UInt32>()
        for volume in allVolumes() {
            let pages = volume.state.withLock { $0.pages }
            for (page, frame) in pages {
                if volume.deduplicates {
                    references[frame, default: 0] += 1
                } else if !privateFrames.insert(frame).inserted {
                    return "frame \(frame) of volume '\(volume.name)' page \(page) is a second private page's"
                }
            }
        }
        let problem = index.withLock { (index: inout FrameIndex) -> String? in
            for (frame, count) in references {
                if privateFrames.contains(frame) { return "frame \(frame) is both private and indexed" }
                guard index.shareCount(frame) == count else {
                    return "frame \(frame): share count \(index.shareCount(frame)), but \(count) pages point at it"
                }
                let hash = arena.withFrame(frame) { hasher.hash($0) }
                guard index.isFiled(frame, under: hash) else {
                    return "frame \(frame) is not found under the hash of its bytes"
                }
            }
            for frame in privateFrames where index.shareCount(frame) != 0 {
                return "private frame \(frame) has share count \(index.shareCount(frame))"
            }
            guard index.indexedFrames == references.count else {
                return "the index holds \(index.indexedFrames) frames, but pages point at \(references.count)"
            }
            guard index.references == references.values.reduce(0, +) else {
                return "the index counts \(index.references) references, the volumes \(references.values.reduce(0, +))"
            }
            guard index.sharedFrames == references.values.filter({ $0 > 1 }).count else {
                return "the index counts \(index.sharedFrames) shared frames, the volumes \(references.values.filter { $0 > 1 }.count)"
            }
            return nil
        }
        if let problem { return problem }
        let pointedAt = references.count + privateFrames.count
        guard arena.usedFrames == pointedAt else {
            return "the arena lends \(arena.usedFrames) frames, but pages point at \(pointedAt)"
        }
        return nil
    }
}
