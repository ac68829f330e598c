import Synchronization

/// De-duplication totals since the server started, for `DEDUP_STAT` and the metrics: what the
/// write path found, counted with relaxed atomics (statistics, not synchronisation).
public final class DedupCounters: Sendable {
    private let hashed = Atomic<UInt64>(0)
    private let duplicates = Atomic<UInt64>(0)
    private let collisions = Atomic<UInt64>(0)
    private let copies = Atomic<UInt64>(0)
    private let cloned = Atomic<UInt64>(0)

    public init() {}

    /// Pages of de-duplicating volumes hashed on their way in.
    public var pagesHashed: UInt64 { hashed.load(ordering: .relaxed) }
    /// Pages written whose content was stored already (they took no frame).
    public var duplicatePages: UInt64 { duplicates.load(ordering: .relaxed) }
    /// Candidate frames whose hash matched a written page's and whose bytes did not.
    public var hashCollisions: UInt64 { collisions.load(ordering: .relaxed) }
    /// Writes to a page whose frame other pages shared: the page moved, the frame stayed.
    public var copiesOnWrite: UInt64 { copies.load(ordering: .relaxed) }
    /// Pages a `VOLUME_CLONE` gave its new volume.
    public var clonedPages: UInt64 { cloned.load(ordering: .relaxed) }

    /// Counts one planned and applied WRITE.
    func record(_ plan: DedupWritePlan) {
        hashed.wrappingAdd(UInt64(plan.pageCount), ordering: .relaxed)
        duplicates.wrappingAdd(UInt64(plan.duplicatePages), ordering: .relaxed)
        collisions.wrappingAdd(UInt64(plan.collisions), ordering: .relaxed)
        copies.wrappingAdd(UInt64(plan.copiesOnWrite), ordering: .relaxed)
    }

    /// Counts `pages` given to a clone (and `hashedPages` of them hashed to be indexed).
    func recordClone(pages: Int, hashedPages: Int, duplicatePages: Int) {
        cloned.wrappingAdd(UInt64(pages), ordering: .relaxed)
        hashed.wrappingAdd(UInt64(hashedPages), ordering: .relaxed)
        duplicates.wrappingAdd(UInt64(duplicatePages), ordering: .relaxed)
    }
}
