import Glibc
import LinuxSystem
import MemxTesting
import RemoteMem
import Synchronization
import Testing

/// A `PageBacking` in memory for cache tests: counts reads and writes per page, can fail
/// writes with a chosen error, and can slow writes down.
final class FakeBacking: PageBacking, @unchecked Sendable {
    // SAFETY: all state is inside the Mutex.
    struct State {
        var pages: [UInt64: [UInt8]] = [:]
        var readsPerPage: [UInt64: Int] = [:]
        var writeCalls = 0
        var pagesWritten = 0
        var writeError: RemoteMemError?
        var writeDelayMicros: UInt32 = 0
    }

    let pageCount: UInt64
    let state = Mutex(State())

    init(pageCount: UInt64) { self.pageCount = pageCount }

    func readPages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        state.withLock { state in
            for run in runs {
                for i in 0..<run.pageCount {
                    let page = run.firstPage + UInt64(i)
                    state.readsPerPage[page, default: 0] += 1
                    let destination = UnsafeMutableRawBufferPointer(start: run.pages[i], count: 4096)
                    if let bytes = state.pages[page] {
                        bytes.withUnsafeBytes { destination.copyMemory(from: $0) }
                    } else {
                        destination.initializeMemory(as: UInt8.self, repeating: 0)
                    }
                }
            }
        }
    }

    func writePages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError) {
        let delay = state.withLock { $0.writeDelayMicros }
        if delay > 0 { usleep(delay) }
        let failure = state.withLock { state -> RemoteMemError? in
            if let error = state.writeError { return error }
            state.writeCalls += 1
            for run in runs {
                precondition(run.pageCount <= 32, "write-back run longer than one request")
                for i in 0..<run.pageCount {
                    state.pages[run.firstPage + UInt64(i)] = Array(UnsafeRawBufferPointer(start: run.pages[i], count: 4096))
                    state.pagesWritten += 1
                }
            }
            return nil
        }
        if let failure { throw failure }
    }

    func trimPages(from firstPage: UInt64, count: UInt64) throws(RemoteMemError) {
        state.withLock { state in
            for page in firstPage..<(firstPage + count) { state.pages[page] = nil }
        }
    }

    /// The stored bytes of `page` (zeros if never written).
    func stored(_ page: UInt64) -> [UInt8] {
        state.withLock { $0.pages[page] } ?? [UInt8](repeating: 0, count: 4096)
    }

    func reads(of page: UInt64) -> Int { state.withLock { $0.readsPerPage[page] ?? 0 } }
}

/// Byte-range helpers over `PageCache` with arrays (tests only).
extension PageCache {
    func read(at offset: UInt64, count: Int) throws(RemoteMemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: count)
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(RemoteMemError) in try read(at: offset, into: buffer) }
        }
        try result.get()
        return bytes
    }

    func write(at offset: UInt64, _ bytes: [UInt8]) throws(RemoteMemError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(RemoteMemError) in try write(at: offset, from: buffer) }
        }
        try result.get()
    }
}

@Suite("Page cache")
struct PageCacheTests {
    static let cacheBytes: UInt64 = 1 << 20  // 256 frames
    static let slow = 60_000  // a flush interval no test waits for

    func makeCache(pages: UInt64 = 4096, writeThrough: Bool = false, interval: Int = Self.slow) throws -> (PageCache, FakeBacking) {
        let backing = FakeBacking(pageCount: pages)
        let cache = try PageCache(backing: backing, options: .init(capacityBytes: Self.cacheBytes, writeThrough: writeThrough,
                                                                   flushIntervalMillis: interval))
        return (cache, backing)
    }

    func pattern(_ seed: UInt64, _ count: Int) -> [UInt8] {
        var random = SeededRandom(seed: seed)
        return random.bytes(count)
    }

    @Test("a miss fetches from the backing once; hits do not")
    func hitAndMiss() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        backing.state.withLock { $0.pages[5] = pattern(5, 4096) }
        #expect(try cache.read(at: 5 * 4096, count: 4096) == pattern(5, 4096))
        #expect(try cache.read(at: 5 * 4096 + 100, count: 200) == Array(pattern(5, 4096)[100..<300]))
        #expect(backing.reads(of: 5) == 1)
        let statistics = cache.statistics
        #expect(statistics.misses == 1 && statistics.hits == 1)
        #expect(cache.residentBytes == 4096)
        // Unwritten pages read as zeros.
        #expect(try cache.read(at: 9 * 4096, count: 4096) == [UInt8](repeating: 0, count: 4096))
    }

    @Test("eviction keeps pages that are hit again (CLOCK second chance)")
    func evictionKeepsHotPages() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        let hot = (0..<UInt64(32)).map { $0 * 3 }
        for page in hot { _ = try cache.read(at: page * 4096, count: 4096) }
        var cold: UInt64 = 1000
        for _ in 0..<40 {
            for _ in 0..<64 {
                _ = try cache.read(at: cold * 4096, count: 4096)
                cold += 1
            }
            for page in hot { _ = try cache.read(at: page * 4096, count: 4096) }
        }
        #expect(cache.statistics.evictions > 2000)
        for page in hot { #expect(backing.reads(of: page) == 1, "hot page \(page) was evicted") }
    }

    @Test("a dirty page is written back before its frame is reused; data survives eviction")
    func dirtyWriteBackBeforeEviction() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        let pages = 3 * 256
        for page in 0..<pages { try cache.write(at: UInt64(page) * 4096, pattern(UInt64(page), 4096)) }
        #expect(cache.statistics.evictions > 0)
        for page in 0..<pages { #expect(try cache.read(at: UInt64(page) * 4096, count: 4096) == pattern(UInt64(page), 4096)) }
        // Everything not cached any more reached the backing, in runs of at most 32 pages.
        let written = backing.state.withLock { $0 }
        #expect(written.pagesWritten >= pages - 256)
        #expect(written.writeCalls < written.pagesWritten / 4, "write-back was not coalesced")
    }

    @Test("writes complete in the cache; FLUSH returns once they reached the backing")
    func flushSemantics() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        for page in 0..<UInt64(16) { try cache.write(at: page * 4096, pattern(page, 4096)) }
        #expect(backing.state.withLock { $0.pagesWritten } == 0, "write-back mode wrote through")
        #expect(cache.statistics.dirtyPages == 16)
        try cache.flush()
        #expect(cache.statistics.dirtyPages == 0)
        for page in 0..<UInt64(16) { #expect(backing.stored(page) == pattern(page, 4096)) }
        // A second flush has nothing to do.
        try cache.flush()
        #expect(backing.state.withLock { $0.pagesWritten } == 16)
    }

    @Test("the background flusher writes dirty pages back without a FLUSH")
    func backgroundFlusher() throws {
        let (cache, backing) = try makeCache(interval: 5)
        defer { cache.stop() }
        try cache.write(at: 0, pattern(1, 8192))
        var waited = 0
        while backing.state.withLock({ $0.pagesWritten }) < 2 && waited < 2000 {
            usleep(1000)
            waited += 1
        }
        #expect(backing.stored(0) + backing.stored(1) == pattern(1, 8192))
    }

    @Test("write-through: the backing has the data when the write returns")
    func writeThrough() throws {
        let (cache, backing) = try makeCache(writeThrough: true)
        defer { cache.stop() }
        try cache.write(at: 4096 * 7 + 512, pattern(7, 1024))
        var expected = [UInt8](repeating: 0, count: 4096)
        expected.replaceSubrange(512..<1536, with: pattern(7, 1024))
        #expect(backing.stored(7) == expected)
        #expect(cache.statistics.dirtyPages == 0)
    }

    @Test("partial-page writes read-modify-write pages that are not cached")
    func partialPages() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        var model = [UInt8](repeating: 0, count: 16 * 4096)
        for page in 0..<16 {
            let bytes = pattern(UInt64(100 + page), 4096)
            backing.state.withLock { $0.pages[UInt64(page)] = bytes }
            model.replaceSubrange(page * 4096..<(page + 1) * 4096, with: bytes)
        }
        let writes: [(Int, Int)] = [(3 * 4096 + 512, 512), (4000, 6000), (8 * 4096 - 1, 2), (10 * 4096 + 7, 3 * 4096)]
        for (i, (offset, count)) in writes.enumerated() {
            let bytes = pattern(UInt64(200 + i), count)
            try cache.write(at: UInt64(offset), bytes)
            model.replaceSubrange(offset..<(offset + count), with: bytes)
        }
        #expect(try cache.read(at: 0, count: model.count) == model)
        try cache.flush()
        for page in 0..<16 { #expect(backing.stored(UInt64(page)) == Array(model[page * 4096..<(page + 1) * 4096])) }
    }

    @Test("discard zeroes partial edges, drops cached pages and trims the backing")
    func discard() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        try cache.write(at: 0, pattern(3, 8 * 4096))
        try cache.flush()
        try cache.discard(at: 4096 + 100, length: 3 * 4096)
        var expected = pattern(3, 8 * 4096)
        expected.replaceSubrange((4096 + 100)..<(4 * 4096 + 100), with: [UInt8](repeating: 0, count: 3 * 4096))
        #expect(try cache.read(at: 0, count: 8 * 4096) == expected)
        #expect(backing.state.withLock { $0.pages[2] == nil && $0.pages[3] == nil })
        try cache.flush()
        #expect(backing.stored(1) == Array(expected[4096..<8192]))
    }

    @Test("a failing write-back reaches the caller: FLUSH, and a write that needs a dirty frame")
    func writeBackFailure() throws {
        let (cache, backing) = try makeCache()
        defer { cache.stop() }
        backing.state.withLock { $0.writeError = .full(server: "fake") }
        try cache.write(at: 0, pattern(1, 4096))
        #expect(throws: RemoteMemError.full(server: "fake")) { try cache.flush() }
        // Fill every frame with dirty pages: the next write must write one back, and fails.
        #expect(throws: RemoteMemError.full(server: "fake")) {
            for page in 1..<UInt64(600) { try cache.write(at: page * 4096, pattern(page, 4096)) }
        }
        backing.state.withLock { $0.writeError = nil }
        try cache.flush()
        #expect(backing.stored(0) == pattern(1, 4096))
    }

    @Test("several threads writing disjoint ranges through a small cache")
    func concurrentDisjointWriters() throws {
        let (cache, backing) = try makeCache(interval: 2)
        defer { cache.stop() }
        let threads = 4
        let regionPages = 200  // 800 pages in all: three times the cache
        let failures = Mutex(0)
        var workers: [OSThread] = []
        for t in 0..<threads {
            workers.append(try OSThread(name: "cache-test-\(t)") {
                var random = SeededRandom(seed: UInt64(t) + 77)
                var model = [UInt8](repeating: 0, count: regionPages * 4096)
                let base = t * regionPages * 4096
                for _ in 0..<300 {
                    let offset = Int.random(in: 0..<(model.count - 1), using: &random) & ~511
                    let count = min(model.count - offset, 512 * Int.random(in: 1...40, using: &random))
                    let bytes = random.bytes(count)
                    do {
                        try cache.write(at: UInt64(base + offset), bytes)
                        model.replaceSubrange(offset..<(offset + count), with: bytes)
                        let check = Int.random(in: 0..<(model.count - 8192), using: &random)
                        if try cache.read(at: UInt64(base + check), count: 8192) != Array(model[check..<(check + 8192)]) {
                            failures.withLock { $0 += 1 }
                        }
                    } catch {
                        failures.withLock { $0 += 1 }
                    }
                }
                do {
                    if try cache.read(at: UInt64(base), count: model.count) != model { failures.withLock { $0 += 1 } }
                } catch {
                    failures.withLock { $0 += 1 }
                }
            })
        }
        for worker in workers { worker.join() }
        #expect(failures.withLock { $0 } == 0)
        try cache.flush()
        #expect(cache.statistics.dirtyPages == 0)
        // The backing now agrees with the cache everywhere.
        for page in stride(from: 0, to: threads * regionPages, by: 7) {
            #expect(try cache.read(at: UInt64(page) * 4096, count: 4096) == backing.stored(UInt64(page)))
        }
    }

    @Test("random reads, writes, discards and flushes match a reference model")
    func randomOperationsMatchModel() throws {
        var random = SeededRandom(environmentOr: 0x5eed_cafe)
        let pages = 1024
        let (cache, backing) = try makeCache(pages: UInt64(pages), interval: 1)
        defer { cache.stop() }
        var model = [UInt8](repeating: 0, count: pages * 4096)
        for step in 0..<400 {
            let offset = Int.random(in: 0..<(model.count - 1), using: &random)
            let count = min(model.count - offset, Int.random(in: 1...(64 * 1024), using: &random))
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<4:
                let bytes = random.bytes(count)
                try cache.write(at: UInt64(offset), bytes)
                model.replaceSubrange(offset..<(offset + count), with: bytes)
            case 4..<8:
                #expect(try cache.read(at: UInt64(offset), count: count) == Array(model[offset..<(offset + count)]),
                        "step \(step): \(random.reproduceHint)")
            case 8:
                try cache.discard(at: UInt64(offset), length: UInt64(count))
                model.replaceSubrange(offset..<(offset + count), with: [UInt8](repeating: 0, count: count))
            default:
                try cache.flush()
            }
        }
        try cache.flush()
        for page in 0..<pages {
            #expect(backing.stored(UInt64(page)) == Array(model[page * 4096..<(page + 1) * 4096]), "\(random.reproduceHint)")
        }
    }

    @Test("a cache below the minimum size is refused")
    func tooSmall() {
        #expect(throws: RemoteMemError.self) {
            _ = try PageCache(backing: FakeBacking(pageCount: 16), options: .init(capacityBytes: 4096))
        }
    }
}
