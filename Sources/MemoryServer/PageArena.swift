import Glibc
import LinuxSystem
import RemoteMem
import Synchronization

/// The memory a server lends: at most `capacityFrames` frames of 4 KiB, reserved once as one
/// range of address space and committed only as frames are first written.
///
/// Frames are numbered `0..<capacityFrames`. Never-used frames are handed out in order (a
/// high-water mark); freed frames go back to the kernel (`MADV_DONTNEED`, so the resident set
/// drops) and onto a free list for reuse. `allocate` is all-or-nothing, which is how a WRITE
/// that does not fit is refused whole (`FULL`) with nothing of it applied.
///
/// Thread-safe: allocation and release take one short lock; copying in and out of frames needs
/// none (callers own the frames they copy, under their volume's lock).
public final class PageArena: Sendable {
    /// The size of a frame: one wire page.
    public static let frameBytes = WireLimits.pageSize
    /// Most frames one arena can have: frame indices are `UInt32` (16 TiB of frames).
    public static let capacityFramesMax = Int(UInt32.max)

    /// Frames this arena lends at most (`--memory` / 4 KiB).
    public let capacityFrames: Int
    private let memory: MemoryReservation
    private let bookkeeping: Mutex<Bookkeeping>

    private struct Bookkeeping {
        /// Frames below this index have been handed out at least once.
        var highWaterFrames = 0
        /// Freed frames, already discarded, ready for reuse.
        var freeFrames: [UInt32] = []
        var usedFrames = 0
    }

    /// Reserves room for `capacityBytes / 4 KiB` frames (rounded down; at least one).
    public init(capacityBytes: UInt64) throws(MemoryServerError) {
        let frames = capacityBytes / UInt64(Self.frameBytes)
        guard frames >= 1, frames <= UInt64(Self.capacityFramesMax) else {
            throw .invalidConfiguration("memory \(capacityBytes) bytes must hold between 1 and \(Self.capacityFramesMax) 4 KiB frames")
        }
        capacityFrames = Int(frames)
        do {
            memory = try MemoryReservation(length: capacityFrames * Self.frameBytes)
        } catch {
            throw .system("reserving \(ByteSize.describe(frames * UInt64(Self.frameBytes))) of address space", error)
        }
        bookkeeping = Mutex(Bookkeeping())
    }

    /// Frames currently lent to volumes.
    public var usedFrames: Int { bookkeeping.withLock { $0.usedFrames } }

    /// Frames still free.
    public var freeFrames: Int { capacityFrames - usedFrames }

    /// Takes `frames.count` frames, writing their indices into `frames`; false (and nothing
    /// taken) if fewer are free.
    public func allocate(into frames: UnsafeMutableBufferPointer<UInt32>) -> Bool {
        let count = frames.count
        guard count > 0 else { return true }
        return bookkeeping.withLock { book in
            guard capacityFrames - book.usedFrames >= count else { return false }
            for i in 0..<count {
                if let reused = book.freeFrames.popLast() {
                    frames[i] = reused
                } else {
                    frames[i] = UInt32(book.highWaterFrames)
                    book.highWaterFrames += 1
                }
            }
            book.usedFrames += count
            return true
        }
    }

    /// Gives `frames` back: their memory returns to the kernel, then they become free.
    /// Sorts `frames` in place so that contiguous runs are discarded with one system call.
    public func release(_ frames: inout [UInt32]) {
        frames.withUnsafeMutableBufferPointer { release($0) }
    }

    /// `release` for frames in a caller's buffer (the write path's, on its stack); sorts them.
    public func release(_ frames: UnsafeMutableBufferPointer<UInt32>) {
        guard !frames.isEmpty else { return }
        var frames = frames
        frames.sort()
        var runStart = 0
        for i in 1...frames.count where i == frames.count || frames[i] != frames[i - 1] + 1 {
            let first = Int(frames[runStart])
            precondition(first + (i - runStart) <= capacityFrames, "frame \(first) outside the arena")
            memory.discard(offset: first * Self.frameBytes, count: (i - runStart) * Self.frameBytes)
            runStart = i
        }
        bookkeeping.withLock { book in
            book.freeFrames.append(contentsOf: frames)
            book.usedFrames -= frames.count
            precondition(book.usedFrames >= 0, "released more frames than were allocated")
        }
    }

    /// Copies one page from `source` into `frame`.
    func store(frame: UInt32, from source: UnsafeRawPointer) {
        precondition(Int(frame) < capacityFrames, "frame \(frame) outside the arena")
        // SAFETY: `frame` is inside the reservation (checked above) and a frame is frameBytes
        // long; the caller guarantees `source` has frameBytes readable bytes.
        (memory.base + Int(frame) * Self.frameBytes).copyMemory(from: source, byteCount: Self.frameBytes)
    }

    /// True if `frame` holds exactly the 4 KiB at `page`: the byte compare that confirms a
    /// de-duplication candidate, so a hash collision can never alias two different pages.
    func contentEquals(frame: UInt32, _ page: UnsafeRawPointer) -> Bool {
        precondition(Int(frame) < capacityFrames, "frame \(frame) outside the arena")
        // SAFETY: as in `store`; the caller guarantees `page` has frameBytes readable bytes.
        return memcmp(memory.base + Int(frame) * Self.frameBytes, page, Self.frameBytes) == 0
    }

    /// Runs `body` with `frame`'s bytes (frameBytes of them), for hashing a stored page. The
    /// caller keeps the frame from changing meanwhile (its volume's lock, or the index's).
    func withFrame<T>(_ frame: UInt32, _ body: (UnsafeRawPointer) -> T) -> T {
        precondition(Int(frame) < capacityFrames, "frame \(frame) outside the arena")
        // SAFETY: the frame is inside the reservation (checked above) and frameBytes long.
        return body(UnsafeRawPointer(memory.base + Int(frame) * Self.frameBytes))
    }

    /// Copies `frame` into one page at `destination`.
    func load(frame: UInt32, into destination: UnsafeMutableRawPointer) {
        precondition(Int(frame) < capacityFrames, "frame \(frame) outside the arena")
        // SAFETY: as in `store`; the caller guarantees `destination` has frameBytes writable bytes.
        destination.copyMemory(from: memory.base + Int(frame) * Self.frameBytes, byteCount: Self.frameBytes)
    }
}
