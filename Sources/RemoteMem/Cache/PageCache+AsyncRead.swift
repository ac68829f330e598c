import LinuxSystem

/// A read of the cache that does not wait for the network: `startRead` pins the pages, starting
/// one fetch for the misses; the caller polls, then copies out and unpins. The queue thread of
/// memx-vhost keeps many of these in flight, so one slow server never stalls its queue.
public final class PendingRead: @unchecked Sendable {
    // SAFETY: used by one thread at a time (its owner).

    /// The fetch of the misses.
    public let transfer: PageTransfer
    let batch: UnsafeMutablePointer<Int32>
    var first: UInt64 = 0
    var count = 0
    var offsetInFirst = 0
    var fetching = false
    var fetchLow = 0
    var fetchHigh = 0

    public init(signal: CompletionSignal) {
        transfer = PageTransfer(signal: signal)
        batch = .allocate(capacity: PageTransfer.pagesMax)
    }

    deinit { batch.deallocate() }
}

/// What `startRead` did.
public enum ReadStart: Sendable {
    /// Every page is cached and pinned: copy out, then `endRead`.
    case ready
    /// Misses are being fetched: `pollRead` until true, `finishRead`, copy out, `endRead`.
    case fetching
    /// The read cannot start without waiting (a page another thread is filling, no frame free
    /// without a write-back, or larger than one transfer): use the blocking `read`.
    case mustBlock
}

extension PageCache {
    /// Pins the pages of `[offset, offset + length)` into `read` and starts fetching the
    /// missing ones, without waiting for anything but the cache's lock.
    public func startRead(at offset: UInt64, length: Int, _ read: PendingRead) -> ReadStart {
        let pageSize = Int(PageStoreLimits.pageSize)
        precondition(length > 0 && offset <= backing.pageCount * PageStoreLimits.pageSize
                     && UInt64(length) <= backing.pageCount * PageStoreLimits.pageSize - offset, "read past the volume")
        let first = offset / PageStoreLimits.pageSize
        let inFirst = Int(offset % PageStoreLimits.pageSize)
        let count = (inFirst + length + pageSize - 1) / pageSize
        guard count <= min(batchPages, PageTransfer.pagesMax) else { return .mustBlock }
        read.first = first
        read.count = count
        read.offsetInFirst = inFirst
        read.fetching = false
        let batch = UnsafeMutableBufferPointer(start: read.batch, count: count)
        var low = -1
        var high = -1
        lock.lock()
        if isAnyFilling(first: first, count: count) {
            lock.unlock()
            return .mustBlock
        }
        for i in 0..<count {
            guard let entry = pinLocked(first + UInt64(i)) else {
                rollbackLocked(UnsafeMutableBufferPointer(rebasing: batch[..<i]), writing: false)
                lock.unlock()
                return .mustBlock
            }
            batch[i] = entry
            if entry & Self.newFrameFlag != 0 {
                batch[i] |= Self.fetchFlag
                counters.misses += 1
                if low < 0 { low = i }
                high = i
            }
        }
        lock.unlock()
        guard low >= 0 else { return .ready }
        let transfer = read.transfer
        transfer.firstPage = first + UInt64(low)
        transfer.pageCount = high - low + 1
        for i in low...high {
            let entry = batch[i]
            // Cached pages between two misses ride along into the sink (one request, not two).
            transfer.pages[i - low] = entry & Self.fetchFlag != 0 ? address(Int(entry & Self.frameMask)) : sink.base
        }
        read.fetchLow = low
        read.fetchHigh = high
        read.fetching = true
        backing.startRead(transfer)
        return .fetching
    }

    /// True once `read`'s pages can be copied (or its fetch failed: `finishRead` throws).
    @inline(__always)
    public func pollRead(_ read: PendingRead) -> Bool {
        !read.fetching || backing.pollTransfer(read.transfer)
    }

    /// Sends the fetches `startRead` queued (once per batch of reads, and before any wait).
    public func flushSubmissions() { backing.flushSubmissions() }

    /// Waits until `pollRead` would return true.
    public func waitRead(_ read: PendingRead) {
        if read.fetching { backing.waitTransfer(read.transfer) }
    }

    /// Ends the fetch of a finished read: its frames become valid for everyone. If the fetch
    /// failed, every frame of the read is given back (do not call `endRead`) and the error
    /// thrown.
    public func finishRead(_ read: PendingRead) throws(RemoteMemError) {
        guard read.fetching else { return }
        read.fetching = false
        let batch = UnsafeMutableBufferPointer(start: read.batch, count: read.count)
        lock.lock()
        defer { lock.unlock() }
        if let error = read.transfer.error {
            rollbackLocked(batch, writing: false)
            throw error
        }
        for i in read.fetchLow...read.fetchHigh where batch[i] & Self.fetchFlag != 0 {
            states[Int(batch[i] & Self.frameMask)].filling = false
            batch[i] &= ~Self.fetchFlag
        }
        changed.broadcast()
    }

    /// Copies `destination.count` bytes from byte `position` of the read (pages pinned).
    public func copyOut(_ read: PendingRead, at position: Int, into destination: UnsafeMutableRawBufferPointer) {
        let pageSize = Int(PageStoreLimits.pageSize)
        var done = 0
        var byte = read.offsetInFirst + position
        while done < destination.count {
            let i = byte / pageSize
            precondition(i < read.count, "copy past the read")
            let within = byte % pageSize
            let piece = min(pageSize - within, destination.count - done)
            // SAFETY: the frame is pinned by the read; `piece` bytes fit in both buffers.
            (destination.baseAddress! + done).copyMemory(from: address(Int(read.batch[i] & Self.frameMask)) + within,
                                                         byteCount: piece)
            done += piece
            byte += piece
        }
    }

    /// Unpins `read`'s pages (after `ready`, or a successful `finishRead`).
    public func endRead(_ read: PendingRead) {
        release(UnsafeMutableBufferPointer(start: read.batch, count: read.count), wrote: false)
    }
}
