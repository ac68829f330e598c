/// Limits and defaults of the page cache, each with its reason.
public enum PageCacheLimits {
    /// The smallest cache: 256 frames, enough that several queue threads' batches fit at once.
    public static let capacityBytesMin: UInt64 = 1 << 20
    /// Pages one pass of a read or write pins at once (512 KiB; at most a quarter of the
    /// frames, so one thread can always make progress).
    public static let batchPagesMax = 128
    /// Dirty pages one write-back pass claims: up to 8 full requests in flight together.
    public static let writeBackBatchPagesMax = 256
    /// Dirty pages a writer that finds no clean frame writes back at once (one call, all in
    /// flight together): enough to amortize the round trip, few enough to return soon.
    public static let evictionBatchPagesMax = 64
    /// Pages one write-back run carries (one request).
    public static let writeBackRunPagesMax = Int(WireLimits.pagesPerRequestMax)
    /// The background flusher writes dirty pages back at least this often, so a write is not
    /// left only in memory for long even if no FLUSH comes.
    public static let flushIntervalMillisDefault = 20
    /// Above this share of dirty frames the flusher runs without pausing between passes.
    public static let dirtyHighWaterPercent = 25
    /// How long a thread waiting for another's frame re-checks (a safety net against missed
    /// wake-ups, not the normal path).
    static let waitSliceMillis = 10
}

/// What the cache knows about one frame. Guarded by the cache's lock; the frame's bytes are
/// copied outside the lock while the frame is pinned.
///
/// Dirty tracking uses write sequence numbers rather than a bit, so a write-back can tell
/// whether a write raced with it: a frame is dirty while `writeSeq != cleanSeq`; a write-back
/// records `flushSeq = writeSeq` when it claims the frame and, once acknowledged, sets
/// `cleanSeq = flushSeq` (still dirty if a write came meanwhile). `firstDirtySeq` is the
/// sequence of the oldest write not yet acknowledged, which is what FLUSH waits on.
struct FrameState {
    /// The volume page held, or `PageIndex.emptyKey` for a free frame.
    var page = PageIndex.emptyKey
    var writeSeq: UInt64 = 0
    var cleanSeq: UInt64 = 0
    var firstDirtySeq: UInt64 = 0
    var flushSeq: UInt64 = 0
    /// Threads copying in or out, filling, or writing the frame back: it cannot be evicted.
    var pins: UInt32 = 0
    /// Threads copying guest data in: a write-back waits for them to finish.
    var writers: UInt16 = 0
    /// CLOCK's second-chance bit: set on every hit, cleared as the hand passes.
    var referenced = false
    /// The contents are being fetched or written for the first time: others wait.
    var filling = false
    /// A write-back of this frame is in flight.
    var flushing = false

    var isDirty: Bool { writeSeq != cleanSeq }
    var isFree: Bool { page == PageIndex.emptyKey }
}

/// Counters of a page cache (statistics and tests).
public struct PageCacheStatistics: Equatable, Sendable {
    public var hits: UInt64 = 0
    public var misses: UInt64 = 0
    public var evictions: UInt64 = 0
    public var writeBackPages: UInt64 = 0
    public var dirtyPages = 0
    public var residentPages = 0
}
