import Glibc
import LinuxSystem
import Synchronization

/// A write-back cache of 4 KiB pages in front of a `PageBacking` (the volume's servers):
/// preallocated frames, a page → frame index built at start, CLOCK eviction, dirty tracking and
/// a background flusher (MEMX.md §3).
///
/// - Reads copy hits out of frames; misses are fetched into frames (one `readPages` call for
///   the batch, which the volume sends to each server in one round trip), then copied out.
/// - Writes copy into frames and complete (write-back); the flusher writes dirty pages back in
///   runs of up to 32 pages. With `writeThrough`, a write completes only once the backing
///   acknowledged it. A partial page that is not cached is fetched first (read-modify-write).
/// - `flush()` returns once every write that completed before it is acknowledged.
/// - Eviction never drops a dirty page: a thread that finds only dirty victims writes some back
///   first, and a write-back failure (FULL, a dead server) reaches that thread's caller.
///
/// Threads: one lock guards the index and frame states; page bytes are copied outside it while
/// the frame is pinned, and no lock is held across network I/O. Memory: the frames, index and
/// states are allocated once in `init`; reads and writes allocate nothing.
public final class PageCache: @unchecked Sendable {
    // SAFETY: `states`, `index`, `freeFrames`, `hand`, `sequence`, `counters`, `stopping` and
    // `backgroundError` are guarded by `lock`. Frame bytes are written only by a thread that
    // pinned the frame as a writer or filler; `FrameState` documents the protocol.

    /// How a cache is sized and behaves.
    public struct Options: Sendable {
        public var capacityBytes: UInt64
        public var writeThrough: Bool
        public var flushIntervalMillis: Int

        public init(capacityBytes: UInt64, writeThrough: Bool = false,
                    flushIntervalMillis: Int = PageCacheLimits.flushIntervalMillisDefault) {
            self.capacityBytes = capacityBytes
            self.writeThrough = writeThrough
            self.flushIntervalMillis = flushIntervalMillis
        }
    }

    static let pageSize = Int(PageStoreLimits.pageSize)
    /// Marks a batch entry whose frame this pass allocated (a miss), beside the frame index.
    static let newFrameFlag: Int32 = 1 << 30

    public let backing: PageBacking
    public let options: Options
    /// Write-through while a live migration runs (`setMigrating`), whatever `options` say: the
    /// switchover then has nothing left to write back.
    let migrating = Atomic<Bool>(false)
    public let frameCount: Int
    /// Pages a read or write handles per pass.
    let batchPages: Int

    /// The frames and their dirty records (a file that outlives the process, in memx-vhost).
    public let memory: CacheMemory
    /// Where fetched pages land that are already cached (never read back).
    let sink: MemoryMapping
    /// A zero page: the source of partial-page zeroing in `discard`.
    let zeros: MemoryMapping

    let lock = PosixLock()
    /// Broadcast whenever a frame stops being busy (filled, unpinned, written back).
    let changed = PosixCondition()
    let flusherWake = PosixCondition()
    let states: UnsafeMutablePointer<FrameState>
    var index: PageIndex
    let freeFrames: UnsafeMutablePointer<Int32>
    var freeCount: Int
    var hand = 0
    var flushCursor = 0
    var sequence: UInt64 = 0
    var dirtyCount = 0
    var counters = PageCacheStatistics()
    var stopping = false
    /// The flusher's last failure (cleared by its next success); `flush()` reports its own.
    var backgroundError: RemoteMemError?
    var flusher: OSThread?

    /// Allocates `options.capacityBytes` of frames (rounded down to whole pages, at least
    /// `PageCacheLimits.capacityBytesMin`) in anonymous memory, or uses `memory` (a cache file
    /// opened for this volume, with as many frames), and starts the flusher thread.
    public init(backing: PageBacking, options: Options, memory: CacheMemory? = nil) throws(RemoteMemError) {
        guard options.capacityBytes >= PageCacheLimits.capacityBytesMin else {
            throw .invalidArgument("cache of \(options.capacityBytes) bytes is below the minimum \(PageCacheLimits.capacityBytesMin)")
        }
        self.backing = backing
        self.options = options
        frameCount = Self.frameCount(capacityBytes: options.capacityBytes)
        batchPages = min(PageCacheLimits.batchPagesMax, frameCount / 4)
        if let memory {
            precondition(memory.frameCount == frameCount, "cache memory sized for another capacity")
            self.memory = memory
        } else {
            self.memory = try CacheMemory(anonymousFrames: frameCount)
        }
        do {
            sink = try MemoryMapping(anonymous: Self.pageSize)
            zeros = try MemoryMapping(anonymous: Self.pageSize)
        } catch {
            throw .invalidArgument("cannot allocate the cache's spare pages: \(error)")
        }
        states = .allocate(capacity: frameCount)
        states.initialize(repeating: FrameState(), count: frameCount)
        index = PageIndex(capacity: frameCount)
        freeFrames = .allocate(capacity: frameCount)
        for i in 0..<frameCount { freeFrames[i] = Int32(frameCount - 1 - i) }
        freeCount = frameCount
        do {
            flusher = try OSThread(name: "memx-flusher") { [self] in runFlusher() }
        } catch {
            throw .invalidArgument("cannot start the flusher thread: \(error)")
        }
    }

    /// The frames a cache of `capacityBytes` has.
    public static func frameCount(capacityBytes: UInt64) -> Int {
        Int(capacityBytes / PageStoreLimits.pageSize)
    }

    deinit {
        stop()
        states.deallocate()
        freeFrames.deallocate()
    }

    /// Stops the flusher (without writing anything back: call `flush()` first). Idempotent.
    public func stop() {
        let thread = lock.withLock { () -> OSThread? in
            stopping = true
            flusherWake.signal()
            defer { flusher = nil }
            return flusher
        }
        thread?.join()
    }

    /// The address of `frame`'s 4 KiB.
    @inline(__always)
    func address(_ frame: Int) -> UnsafeMutableRawPointer {
        memory.address(frame)
    }

    // MARK: - Read and write

    /// Copies `destination.count` bytes at byte `offset` of the volume into `destination`.
    public func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(RemoteMemError) {
        try forEachBatch(offset: offset, count: destination.count) { (first, count, done, length) throws(RemoteMemError) in
            try withUnsafeTemporaryAllocation(of: Int32.self, capacity: count) { (batch) throws(RemoteMemError) in
                try acquire(first: first, batch: batch, writing: nil)
                copy(batch, first: first, volumeOffset: offset + UInt64(done), length: length, callerStart: done) { frame, pageOffset, piece, at in
                    // SAFETY: the frame is pinned; `piece` bytes fit in both buffers.
                    (destination.baseAddress! + at).copyMemory(from: frame + pageOffset, byteCount: piece)
                }
                release(batch, wrote: false)
            }
            return done
        }
    }

    /// Stores `source` at byte `offset` of the volume (in the cache; with `writeThrough`, also
    /// on the backing before returning).
    public func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(RemoteMemError) {
        try forEachBatch(offset: offset, count: source.count) { (first, count, done, length) throws(RemoteMemError) in
            let start = offset + UInt64(done)
            let range = WriteRange(start: start, end: start + UInt64(length))
            let lastSequence = try withUnsafeTemporaryAllocation(of: Int32.self, capacity: count) { (batch) throws(RemoteMemError) -> UInt64 in
                try acquire(first: first, batch: batch, writing: range)
                copy(batch, first: first, volumeOffset: start, length: length, callerStart: done) { frame, pageOffset, piece, at in
                    // SAFETY: the frame is pinned for writing; `piece` bytes fit in both buffers.
                    (frame + pageOffset).copyMemory(from: source.baseAddress! + at, byteCount: piece)
                }
                return release(batch, wrote: true)
            }
            if options.writeThrough || migrating.load(ordering: .relaxed) {
                try writeBack(pages: first..<(first + UInt64(count)), through: lastSequence)
            }
            return done
        }
    }

    /// Drops cached pages of `[offset, offset + length)` and trims the whole pages on the
    /// backing; partial pages at the edges are zeroed through the cache.
    public func discard(at offset: UInt64, length: UInt64) throws(RemoteMemError) {
        guard length > 0 else { return }
        let pageSize = PageStoreLimits.pageSize
        let end = offset + length
        let firstWhole = (offset + pageSize - 1) / pageSize
        let endWhole = end / pageSize
        guard firstWhole < endWhole else { return try zero(offset, end) }
        if offset < firstWhole * pageSize { try zero(offset, firstWhole * pageSize) }
        if endWhole * pageSize < end { try zero(endWhole * pageSize, end) }
        // Drop before trimming (a dirty copy written back later would resurrect old data),
        // and again after (a concurrent miss may have fetched the old data meanwhile).
        drop(firstWhole..<endWhole, keepDirty: false)
        try backing.trimPages(from: firstWhole, count: endWhole - firstWhole)
        drop(firstWhole..<endWhole, keepDirty: true)
    }

    /// Writes zeros over `[start, end)`, at most one zero page per write.
    private func zero(_ start: UInt64, _ end: UInt64) throws(RemoteMemError) {
        var position = start
        while position < end {
            let count = Int(min(end - position, PageStoreLimits.pageSize))
            try write(at: position, from: UnsafeRawBufferPointer(start: zeros.base, count: count))
            position += UInt64(count)
        }
    }

    /// Bytes of frames holding a page.
    public var residentBytes: UInt64 { lock.withLock { UInt64(frameCount - freeCount) * PageStoreLimits.pageSize } }

    /// The volume pages the cache holds now (a migration source's hot-page list).
    public func residentPages() -> [UInt64] {
        lock.withLock {
            var pages: [UInt64] = []
            pages.reserveCapacity(frameCount - freeCount)
            for frame in 0..<frameCount where states[frame].page != PageIndex.emptyKey && !states[frame].filling {
                pages.append(states[frame].page)
            }
            return pages
        }
    }

    public var statistics: PageCacheStatistics {
        lock.withLock {
            var snapshot = counters
            snapshot.dirtyPages = dirtyCount
            snapshot.residentPages = frameCount - freeCount
            return snapshot
        }
    }

    // MARK: - Batches

    /// The byte range a write covers (to tell whole-page overwrites from partial ones).
    struct WriteRange {
        var start: UInt64
        var end: UInt64

        func coversWholePage(_ page: UInt64) -> Bool {
            start <= page * PageStoreLimits.pageSize && (page + 1) * PageStoreLimits.pageSize <= end
        }
    }

    /// Calls `body(firstPage, pageCount, bytesDone, bytesInBatch)` for consecutive batches of
    /// at most `batchPages` pages covering `count` bytes from `offset`.
    private func forEachBatch(offset: UInt64, count: Int,
                              _ body: (UInt64, Int, Int, Int) throws(RemoteMemError) -> Int) throws(RemoteMemError) {
        guard count > 0 else { return }
        guard offset < backing.pageCount * PageStoreLimits.pageSize,
              UInt64(count) <= backing.pageCount * PageStoreLimits.pageSize - offset
        else { throw .invalidArgument("range \(offset)+\(count) is outside the volume") }
        var done = 0
        let pageSize = Int(PageStoreLimits.pageSize)
        while done < count {
            let position = offset + UInt64(done)
            let first = position / PageStoreLimits.pageSize
            let inFirst = Int(position % PageStoreLimits.pageSize)
            let length = min(count - done, batchPages * pageSize - inFirst)
            let pages = (inFirst + length + pageSize - 1) / pageSize
            _ = try body(first, pages, done, length)
            done += length
        }
    }

    /// Calls `move(frame, offsetInPage, bytes, offsetInCallerBuffer)` for each page's piece of
    /// `[volumeOffset, volumeOffset + length)`; `callerStart` is where the batch begins in the
    /// caller's buffer.
    private func copy(_ batch: UnsafeMutableBufferPointer<Int32>, first: UInt64, volumeOffset: UInt64, length: Int,
                      callerStart: Int, _ move: (UnsafeMutableRawPointer, Int, Int, Int) -> Void) {
        let pageSize = Int(PageStoreLimits.pageSize)
        let base = Int(volumeOffset - first * PageStoreLimits.pageSize)
        let end = base + length
        var position = base
        for i in 0..<batch.count where position < end {
            let piece = min((i + 1) * pageSize, end) - position
            move(address(Int(batch[i] & ~Self.newFrameFlag)), position - i * pageSize, piece, callerStart + position - base)
            position += piece
        }
    }
}
