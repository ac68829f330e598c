import Glibc
import LinuxSystem

/// The page cache's memory: its frames and one dirty record per frame. In `memx-vhost` they live
/// in a shared-memory file (`<directory>/memx-<volume>.cache`) that outlives the process, so a
/// write acknowledged in the cache (write-back) survives `kill -9`: the next process to open the
/// volume writes the recorded dirty pages back to the servers before it serves anything.
/// Tests use anonymous memory (nothing to recover).
///
/// File layout (little-endian): a 4 KiB header — magic `"MEMXCACH"`, format u32, page size u32,
/// frame count u64, volume pages u64, name length u32, name bytes — then the records
/// (`frameCount` × u64, rounded up to a page), then the frames (`frameCount` × 4 KiB).
///
/// A record is 0 when the frame holds nothing that must be written back, else
/// `page << 1 | 1`: the frame holds the newest acknowledged data of `page`. The cache stores a
/// record after the guest's bytes are copied in and before the write completes, and clears it
/// after the servers acknowledged the page (or the page is dropped), each with one aligned 8-byte
/// store, so a process killed between any two instructions leaves records that are either old or
/// new, never torn. (The file is memory: it survives the process, not the host.)
public final class CacheMemory: @unchecked Sendable {
    // SAFETY: the mappings are owned here and outlive every pointer handed out; frames and
    // records are accessed under the PageCache's frame-pinning protocol.

    static let magic: UInt64 = 0x4843_4143_584D_454D  // "MEMXCACH"
    static let formatVersion: UInt32 = 2
    /// Where the header keeps the lease epoch the file's writes were made under.
    static let epochOffset = 296
    static let headerBytes = Int(PageStoreLimits.pageSize)
    static let nameBytesMax = 255
    static let pageSize = Int(PageStoreLimits.pageSize)

    /// The file, or nil for anonymous memory.
    public let path: String?
    public let frameCount: Int
    /// Dirty pages a previous process left and this one wrote back on open.
    public let recoveredPages: Int
    /// Dirty pages a previous process left that were NOT written back because another backend
    /// has held the volume's lease since (they would overwrite its newer data).
    public let discardedPages: Int
    /// The lease epoch the previous process wrote under (0: no previous file).
    public let previousEpoch: UInt64
    let frames: UnsafeMutableRawPointer
    let records: UnsafeMutablePointer<UInt64>
    private let mapping: MemoryMapping
    private let file: SharedFileDescriptor?

    /// Anonymous frames and records (nothing survives the process).
    public init(anonymousFrames frameCount: Int) throws(RemoteMemError) {
        precondition(frameCount > 0)
        let recordBytes = Self.recordBytes(frameCount)
        do {
            mapping = try MemoryMapping(anonymous: recordBytes + frameCount * Self.pageSize)
        } catch {
            throw .invalidArgument("cannot allocate a cache of \(frameCount) pages: \(error)")
        }
        path = nil
        file = nil
        self.frameCount = frameCount
        recoveredPages = 0
        discardedPages = 0
        previousEpoch = 0
        // SAFETY: records fill the first `recordBytes` of the mapping, frames the rest; both are
        // page-aligned, and anonymous memory starts zeroed (no dirty records).
        records = mapping.base.bindMemory(to: UInt64.self, capacity: frameCount)
        frames = mapping.base + recordBytes
    }

    /// The cache file of `volume` in `directory`.
    public static func path(directory: String, volume: String) -> String {
        directory + "/memx-" + volume + ".cache"
    }

    /// Opens the cache file of `volume` in `directory` (locked: one process per volume and
    /// host). If a previous process left one, every page it records as dirty is written to
    /// `backing` first (its frames are the only copy of acknowledged writes); only then is the
    /// file emptied and sized for `frameCount` frames. A damaged file or a failed write-back is an
    /// error and the file is kept, so nothing acknowledged is ever dropped silently.
    ///
    /// `epoch` is the lease this process just took. The leftovers are written back only if that
    /// lease directly follows the one they were written under (`previous + 1`: every open raises
    /// the epoch, so nobody else opened the volume in between). Otherwise another backend (a
    /// migration destination, say) has held the volume since, its data is newer, and the
    /// leftovers are dropped and counted in `discardedPages`: they lost their lease.
    public init(directory: String, volume: String, frameCount: Int, backing: PageBacking,
                epoch: UInt64) throws(RemoteMemError) {
        precondition(frameCount > 0)
        guard volume.utf8.count <= Self.nameBytesMax else { throw .invalidArgument("volume name longer than \(Self.nameBytesMax) bytes") }
        let path = Self.path(directory: directory, volume: volume)
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .cacheFile("cannot open the cache file \(path): \(Errno.current)") }
        let owned = FileDescriptor(adopting: fd)
        do {
            try owned.lockExclusive()
        } catch {
            throw .cacheFile("the cache file \(path) is in use by another process (volume '\(volume)' is served on this host)")
        }
        (recoveredPages, discardedPages, previousEpoch) = try Self.recover(owned, path: path, volume: volume, backing: backing,
                                                                          epoch: epoch)
        let recordBytes = Self.recordBytes(frameCount)
        let mapped: MemoryMapping
        do {
            // Truncating to zero first drops the old records and frames (tmpfs gives the memory
            // back); the new file reads as zeros: no dirty records.
            try owned.truncate(to: 0)
            try owned.truncate(to: Self.headerBytes + recordBytes + frameCount * Self.pageSize)
            try Self.writeHeader(owned, frameCount: frameCount, volumePages: backing.pageCount, volume: volume, epoch: epoch)
            mapped = try MemoryMapping(fd: owned.rawValue, length: recordBytes + frameCount * Self.pageSize,
                                       offset: Self.headerBytes)
        } catch {
            throw .cacheFile("cannot set up the cache file \(path): \(error)")
        }
        mapping = mapped
        self.path = path
        self.frameCount = frameCount
        file = SharedFileDescriptor(owned)
        // SAFETY: as in the anonymous case; the mapping starts after the header.
        records = mapping.base.bindMemory(to: UInt64.self, capacity: frameCount)
        frames = mapping.base + recordBytes
    }

    /// Removes the file after a clean shutdown (every dirty page written back). The mapping
    /// stays valid until this object goes away.
    public func removeFile() {
        if let path { unlink(path) }
    }

    /// The address of `frame`'s 4 KiB.
    @inline(__always)
    func address(_ frame: Int) -> UnsafeMutableRawPointer {
        // SAFETY: frame < frameCount, so the page lies inside the frames part of the mapping.
        frames + frame * Self.pageSize
    }

    /// Records that `frame` holds the newest acknowledged data of `page`.
    @inline(__always)
    func recordDirty(_ frame: Int, page: UInt64) {
        // One aligned 8-byte store: a process killed around it leaves the old or new value.
        UnsafeMutableRawPointer(records + frame).storeBytes(of: (page << 1 | 1).littleEndian, as: UInt64.self)
    }

    /// Records that `frame` holds nothing the servers lack.
    @inline(__always)
    func recordClean(_ frame: Int) {
        records[frame] = 0
    }

    /// Number of dirty records (tests and statistics; walks every record).
    public var dirtyRecordCount: Int {
        var count = 0
        for frame in 0..<frameCount where records[frame] != 0 { count += 1 }
        return count
    }

    static func recordBytes(_ frameCount: Int) -> Int {
        (frameCount * 8 + pageSize - 1) / pageSize * pageSize
    }

    // MARK: - The file

    private static func writeHeader(_ fd: borrowing FileDescriptor, frameCount: Int, volumePages: UInt64,
                                    volume: String, epoch: UInt64) throws(Errno) {
        var header = [UInt8](repeating: 0, count: headerBytes)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { header.replaceSubrange(offset..<(offset + $0.count), with: $0) }
        }
        put(magic, at: 0)
        put(formatVersion, at: 8)
        put(UInt32(pageSize), at: 12)
        put(UInt64(frameCount), at: 16)
        put(volumePages, at: 24)
        put(UInt32(volume.utf8.count), at: 32)
        header.replaceSubrange(36..<(36 + volume.utf8.count), with: Array(volume.utf8))
        put(epoch, at: epochOffset)
        let written = header.withUnsafeBytes { pwrite(fd.rawValue, $0.baseAddress, $0.count, 0) }
        if written != headerBytes { throw Errno.current }
    }

    /// Writes back the dirty pages recorded in an existing file (or drops them, see `init`);
    /// returns how many were written back and dropped, and the file's epoch. An empty file (just
    /// created) has nothing to recover.
    private static func recover(_ fd: borrowing FileDescriptor, path: String, volume: String,
                                backing: PageBacking, epoch: UInt64) throws(RemoteMemError) -> (Int, Int, UInt64) {
        let size: Int
        do { size = try fd.size() } catch { throw .cacheFile("cannot stat the cache file \(path): \(error)") }
        guard size > 0 else { return (0, 0, 0) }
        let damaged = { (why: String) -> RemoteMemError in
            .cacheFile("the cache file \(path) \(why); it may hold acknowledged writes, so it is kept: "
                             + "inspect it, or remove it to start without them")
        }
        guard size >= headerBytes else { throw damaged("is too short") }
        var header = [UInt8](repeating: 0, count: headerBytes)
        let read = header.withUnsafeMutableBytes { pread(fd.rawValue, $0.baseAddress, $0.count, 0) }
        guard read == headerBytes else { throw damaged("cannot be read") }
        func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            header.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        }
        guard get(UInt64.self, at: 0) == magic else { throw damaged("is not a MemX cache file") }
        guard get(UInt32.self, at: 8) == formatVersion, get(UInt32.self, at: 12) == UInt32(pageSize) else {
            throw damaged("has cache format \(get(UInt32.self, at: 8)), expected \(formatVersion)")
        }
        let frameCount = get(UInt64.self, at: 16)
        let volumePages = get(UInt64.self, at: 24)
        let nameLength = Int(get(UInt32.self, at: 32))
        guard nameLength <= nameBytesMax,
              String(decoding: header[36..<(36 + nameLength)], as: UTF8.self) == volume
        else { throw damaged("belongs to another volume") }
        guard volumePages == backing.pageCount else {
            throw damaged("was written for a volume of \(volumePages) pages, this one has \(backing.pageCount)")
        }
        guard frameCount > 0, frameCount <= UInt64(Int.max / pageSize / 2),
              size == headerBytes + recordBytes(Int(frameCount)) + Int(frameCount) * pageSize
        else { throw damaged("has an inconsistent size") }
        let frames = Int(frameCount)
        let recordBytes = recordBytes(frames)
        let old: MemoryMapping
        switch Self.map(fd.rawValue, length: recordBytes + frames * pageSize) {
        case .success(let mapping): old = mapping
        case .failure(let error): throw damaged("cannot be mapped (\(error))")
        }
        let base = old.base
        let previous = get(UInt64.self, at: epochOffset)
        let current = previous == 0 || epoch == previous &+ 1
        let count = try writeBack(base: base, frames: frames, volumePages: volumePages, backing: current ? backing : nil,
                                  damaged: damaged)
        // A use after the write-back keeps the old mapping alive until here.
        let mappedBytes = old.length
        precondition(mappedBytes == recordBytes + frames * pageSize)
        return current ? (count, 0, previous) : (0, count, previous)
    }

    private static func map(_ fd: CInt, length: Int) -> Result<MemoryMapping, Errno> {
        do { return .success(try MemoryMapping(fd: fd, length: length, offset: headerBytes)) } catch { return .failure(error) }
    }

    /// Writes back every dirty record of the old file mapped at `base` (with no `backing`, only
    /// checks and counts them); returns how many.
    private static func writeBack(base: UnsafeMutableRawPointer, frames: Int, volumePages: UInt64, backing: PageBacking?,
                                  damaged: (String) -> RemoteMemError) throws(RemoteMemError) -> Int {
        let recordBytes = recordBytes(frames)
        // SAFETY: the mapping holds `frames` records followed by the frames (checked by the
        // caller) and stays mapped until this function returns.
        let records = base.bindMemory(to: UInt64.self, capacity: frames)
        var dirty: [(page: UInt64, frame: Int)] = []
        for frame in 0..<frames {
            let record = UInt64(littleEndian: records[frame])
            guard record != 0 else { continue }
            guard record & 1 == 1, record >> 1 < volumePages else { throw damaged("has a bad record for frame \(frame)") }
            dirty.append((record >> 1, frame))
        }
        guard !dirty.isEmpty else { return 0 }
        // A page recorded twice cannot happen (the cache indexes each page once); keep the
        // check so a damaged file is an error rather than a coin toss between two versions.
        dirty.sort { $0.page < $1.page }
        for i in 1..<max(1, dirty.count) where dirty[i].page == dirty[i - 1].page {
            throw damaged("records page \(dirty[i].page) twice")
        }
        guard let backing else { return dirty.count }
        var pointers = dirty.map { base + recordBytes + $0.frame * pageSize }
        var runs: [PageRun] = []
        try pointers.withUnsafeMutableBufferPointer { (pages) throws(RemoteMemError) in
            var start = 0
            while start < dirty.count {
                runs.removeAll(keepingCapacity: true)
                var i = start
                // Up to 256 pages per call, in runs of consecutive pages (at most 32 each).
                while i < dirty.count && i - start < PageCacheLimits.writeBackBatchPagesMax {
                    if let last = runs.last, dirty[i].page == last.firstPage + UInt64(last.pageCount),
                       last.pageCount < PageCacheLimits.writeBackRunPagesMax {
                        runs[runs.count - 1].pageCount += 1
                    } else {
                        runs.append(PageRun(firstPage: dirty[i].page, pageCount: 1, pages: pages.baseAddress! + i))
                    }
                    i += 1
                }
                let result = runs.withUnsafeBufferPointer { runs in
                    Result { () throws(RemoteMemError) in try backing.writePages(runs) }
                }
                try result.get()
                start = i
            }
        }
        return dirty.count
    }
}
