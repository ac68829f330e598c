import Foundation
import Glibc
import LinuxSystem
import MemxTesting
import RemoteMem
import Synchronization
import Testing

/// The page cache in a shared-memory file (`CacheMemory`): what a write-back cache leaves behind
/// when its process dies is written back by the next one, and nothing else is.
@Suite("Cache file")
struct CacheMemoryTests {
    static let cacheBytes: UInt64 = 1 << 20  // 256 frames
    static let frames = PageCache.frameCount(capacityBytes: cacheBytes)
    static let slow = 60_000  // the flusher never runs on its own during a test

    func page(_ seed: UInt64) -> [UInt8] {
        var random = SeededRandom(seed: seed)
        return random.bytes(4096)
    }

    /// A write-back cache on a cache file in `directory`, as memx-vhost makes it.
    func openCache(_ directory: String, _ backing: FakeBacking, volume: String = "vol",
                   frames: Int = Self.frames, epoch: UInt64 = 1) throws -> PageCache {
        let memory = try CacheMemory(directory: directory, volume: volume, frameCount: frames, backing: backing, epoch: epoch)
        return try PageCache(backing: backing, options: .init(capacityBytes: UInt64(frames) * 4096, flushIntervalMillis: Self.slow),
                             memory: memory)
    }

    @Test("dirty pages left by a dead process are written back by the next open; clean and flushed ones are not")
    func recoversDirtyPages() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        var leftDirty = 0
        do {
            let cache = try openCache(directory, backing)
            try cache.write(at: 10 * 4096, page(10))
            try cache.write(at: 11 * 4096, page(11))
            try cache.flush()  // 10 and 11 are on the backing now
            try cache.write(at: 11 * 4096, page(111))  // dirty again, newer data
            for p: UInt64 in 100..<140 { try cache.write(at: p * 4096, page(p)) }
            try cache.write(at: 3000 * 4096 + 512, Array(page(3000)[0..<1024]))  // a partial page: read-modify-write
            _ = try cache.read(at: 2000 * 4096, count: 4096)  // a clean miss
            // "Crash": stop without writing back; the file and its records stay behind. (The
            // flusher may have written a few pages already; their records are cleared.)
            cache.stop()
            leftDirty = cache.memory.dirtyRecordCount
            #expect(leftDirty == cache.statistics.dirtyPages)
        }
        #expect(leftDirty > 30, "the flusher wrote back nearly everything during the test")
        let writtenBefore = backing.state.withLock { $0.pagesWritten }
        let second = try openCache(directory, backing, epoch: 2)
        defer { second.stop() }
        #expect(second.memory.recoveredPages == leftDirty)
        #expect(backing.stored(10) == page(10))
        #expect(backing.stored(11) == page(111))
        for p: UInt64 in 100..<140 { #expect(backing.stored(p) == page(p)) }
        var expected = [UInt8](repeating: 0, count: 4096)
        expected.replaceSubrange(512..<1536, with: page(3000)[0..<1024])
        #expect(backing.stored(3000) == expected)
        #expect(backing.stored(2000) == [UInt8](repeating: 0, count: 4096))
        #expect(backing.state.withLock { $0.pagesWritten } == writtenBefore + leftDirty)
        #expect(second.memory.dirtyRecordCount == 0, "the new file starts without records")
    }

    @Test("flushed, discarded and evicted pages leave no records; a clean close removes the file")
    func recordsFollowTheCache() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile-records")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        let cache = try openCache(directory, backing)
        for p: UInt64 in 0..<64 { try cache.write(at: p * 4096, page(p)) }
        #expect(cache.memory.dirtyRecordCount == 64)
        try cache.discard(at: 0, length: 16 * 4096)
        #expect(cache.memory.dirtyRecordCount == 48)
        try cache.flush()
        #expect(cache.memory.dirtyRecordCount == 0)
        // Twice the cache of new dirty pages: eviction writes pages back, records follow.
        for p: UInt64 in 1000..<(1000 + 2 * UInt64(Self.frames)) { try cache.write(at: p * 4096, page(p)) }
        try cache.flush()
        #expect(cache.memory.dirtyRecordCount == 0)
        cache.stop()
        let path = CacheMemory.path(directory: directory, volume: "vol")
        #expect(FileManager.default.fileExists(atPath: path))
        cache.memory.removeFile()
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("the recovered pages are written back before a new cache of another size is made")
    func recoversIntoAnotherSize() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile-resize")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        var leftDirty = 0
        do {
            let cache = try openCache(directory, backing, frames: 512)
            // 120 of 512 frames: below the flusher's high-water mark, so nearly all stay dirty.
            for p: UInt64 in 0..<120 { try cache.write(at: p * 4096, page(p)) }
            cache.stop()
            leftDirty = cache.memory.dirtyRecordCount
        }
        #expect(leftDirty > 100)
        let second = try openCache(directory, backing, frames: 256, epoch: 2)
        defer { second.stop() }
        #expect(second.memory.recoveredPages == leftDirty)
        for p: UInt64 in 0..<120 { #expect(backing.stored(p) == page(p)) }
    }

    @Test("a file in use, damaged, or of another volume is a clear error and is kept")
    func refusesBadFiles() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile-bad")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        do {
            let first = try openCache(directory, backing)
            #expect {
                _ = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: backing, epoch: 2)
            } throws: { "\($0)".contains("in use by another process") }
            try first.write(at: 0, page(1))
            first.stop()
        }
        let path = CacheMemory.path(directory: directory, volume: "vol")

        // Another volume's name in the header (renamed file): refused, not written anywhere.
        let other = CacheMemory.path(directory: directory, volume: "other")
        #expect(rename(path, other) == 0)
        #expect {
            _ = try CacheMemory(directory: directory, volume: "other", frameCount: Self.frames, backing: backing, epoch: 2)
        } throws: { "\($0)".contains("belongs to another volume") }
        #expect(FileManager.default.fileExists(atPath: other))

        // A volume of another size.
        #expect(rename(other, path) == 0)
        #expect {
            _ = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: FakeBacking(pageCount: 8192), epoch: 2)
        } throws: { "\($0)".contains("volume of 4096 pages") }

        // A record naming a page past the volume.
        let fd = open(path, O_RDWR)
        #expect(fd >= 0)
        var record = (UInt64(9999) << 1 | 1).littleEndian
        #expect(pwrite(fd, &record, 8, 4096 + 8 * 5) == 8)
        close(fd)
        #expect {
            _ = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: backing, epoch: 2)
        } throws: { "\($0)".contains("bad record") }

        // Not a cache file at all.
        #expect(truncate(path, 100) == 0)
        #expect {
            _ = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: backing, epoch: 2)
        } throws: { "\($0)".contains("too short") }
        #expect(FileManager.default.fileExists(atPath: path))
        #expect(backing.stored(0) == [UInt8](repeating: 0, count: 4096), "nothing was written from a damaged file")
    }

    @Test("leftovers from an older lease (another backend opened the volume since) are dropped, not written over newer data")
    func dropsLeftoversOfALostLease() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile-lease")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        var leftDirty = 0
        do {
            let cache = try openCache(directory, backing, epoch: 7)
            for p: UInt64 in 0..<8 { try cache.write(at: p * 4096, page(p)) }
            cache.stop()
            leftDirty = cache.memory.dirtyRecordCount
        }
        #expect(leftDirty > 0)
        // Another backend took the lease (epoch 8) and wrote newer data; now epoch 9 opens here.
        for p: UInt64 in 0..<8 { backing.state.withLock { $0.pages[p] = page(100 + p) } }
        let later = try openCache(directory, backing, epoch: 9)
        defer { later.stop() }
        #expect(later.memory.recoveredPages == 0)
        #expect(later.memory.discardedPages == leftDirty)
        #expect(later.memory.previousEpoch == 7)
        for p: UInt64 in 0..<8 { #expect(backing.stored(p) == page(100 + p), "page \(p) was overwritten with stale data") }
    }

    @Test("a failed write-back of the leftovers fails the open and keeps the file for the next try")
    func failedRecoveryKeepsFile() throws {
        let directory = try BackendProcess.temporaryDirectory("cachefile-fail")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backing = FakeBacking(pageCount: 4096)
        do {
            let cache = try openCache(directory, backing)
            for p: UInt64 in 0..<8 { try cache.write(at: p * 4096, page(p)) }
            cache.stop()
        }
        backing.state.withLock { $0.writeError = .full(server: "127.0.0.1:1") }
        #expect(throws: RemoteMemError.full(server: "127.0.0.1:1")) {
            _ = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: backing, epoch: 2)
        }
        backing.state.withLock { $0.writeError = nil }
        let memory = try CacheMemory(directory: directory, volume: "vol", frameCount: Self.frames, backing: backing, epoch: 2)
        #expect(memory.recoveredPages == 8)
        for p: UInt64 in 0..<8 { #expect(backing.stored(p) == page(p)) }
    }
}
