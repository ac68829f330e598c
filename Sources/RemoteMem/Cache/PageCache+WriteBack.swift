import LinuxSystem
import Synchronization

/// Writing dirty pages back: claiming frames, coalescing them into runs, FLUSH, write-through
/// and the background flusher thread.
extension PageCache {
    /// Claims `frame` for write-back if it is dirty and nobody is writing, filling or writing
    /// it back (lock held): pins it and records the write sequence the copy will carry.
    func claimLocked(_ frame: Int) -> Bool {
        let state = states[frame]
        guard !state.isFree, state.isDirty, !state.flushing, !state.filling, state.writers == 0 else { return false }
        states[frame].flushing = true
        states[frame].pins += 1
        states[frame].flushSeq = state.writeSeq
        return true
    }

    /// Claims the dirty pages directly after `page` (up to one full run) into `claimed` from
    /// `start`, stopping at the first page that is not cached or not claimable. Returns how many.
    func claimFollowingLocked(after page: UInt64, into claimed: UnsafeMutableBufferPointer<Int32>, from start: Int) -> Int {
        var count = 0
        var next = page + 1
        while start + count < claimed.count, count + 1 < PageCacheLimits.writeBackRunPagesMax,
              let frame = index.find(next), claimLocked(frame) {
            claimed[start + count] = Int32(frame)
            count += 1
            next += 1
        }
        return count
    }

    /// Writes claimed frames back, as runs of consecutive pages (at most 32 each) in one
    /// backing call, then marks them clean (unless written meanwhile) and unpins them.
    func writeBackClaimed(_ claimed: UnsafeMutableBufferPointer<Int32>) throws(RemoteMemError) {
        guard !claimed.isEmpty else { return }
        lock.withLock { sortByPageLocked(claimed) }
        let result = withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: claimed.count) { pages in
            withUnsafeTemporaryAllocation(of: PageRun.self, capacity: claimed.count) { runs in
                var runCount = 0
                var previous = PageIndex.emptyKey
                for (i, entry) in claimed.enumerated() {
                    let frame = Int(entry)
                    // SAFETY: a claimed frame is pinned, so its page does not change.
                    let page = states[frame].page
                    pages[i] = address(frame)
                    if runCount > 0, page == previous &+ 1, runs[runCount - 1].pageCount < PageCacheLimits.writeBackRunPagesMax {
                        runs[runCount - 1].pageCount += 1
                    } else {
                        runs[runCount] = PageRun(firstPage: page, pageCount: 1, pages: pages.baseAddress! + i)
                        runCount += 1
                    }
                    previous = page
                }
                return Result { () throws(RemoteMemError) in
                    try backing.writePages(UnsafeBufferPointer(rebasing: runs[..<runCount]))
                }
            }
        }
        lock.lock()
        for entry in claimed {
            let frame = Int(entry)
            states[frame].flushing = false
            states[frame].pins -= 1
            if case .success = result {
                states[frame].cleanSeq = states[frame].flushSeq
                if states[frame].isDirty {
                    states[frame].firstDirtySeq = states[frame].flushSeq + 1
                } else {
                    dirtyCount -= 1
                    memory.recordClean(frame)
                }
                counters.writeBackPages += 1
            }
        }
        changed.broadcast()
        lock.unlock()
        try result.get()
    }

    /// Insertion sort by page (lock held): batches are small and often nearly sorted, and it
    /// allocates nothing.
    private func sortByPageLocked(_ frames: UnsafeMutableBufferPointer<Int32>) {
        guard frames.count > 1 else { return }
        for i in 1..<frames.count {
            let entry = frames[i]
            let page = states[Int(entry)].page
            var j = i
            while j > 0 && states[Int(frames[j - 1])].page > page {
                frames[j] = frames[j - 1]
                j -= 1
            }
            frames[j] = entry
        }
    }

    /// Turns migration write-through on (every later write reaches the servers before it
    /// completes, and the flusher writes back what is dirty now without pausing), or off again.
    /// Does not wait: QEMU's main loop waits for the message that turns logging on, and the
    /// switchover writes back whatever is left anyway.
    public func setMigrating(_ on: Bool) {
        migrating.store(on, ordering: .relaxed)
        if on { lock.withLock { flusherWake.signal() } }
    }

    /// FLUSH: returns once every write that completed before the call is acknowledged by the
    /// backing. Writes back what is dirty itself (so a failure is this caller's error) and waits
    /// for write-backs other threads have in flight.
    public func flush() throws(RemoteMemError) {
        let target = lock.withLock { sequence }
        try writeBack(through: target) { visit in
            for frame in 0..<frameCount where !states[frame].isFree { if !visit(frame) { break } }
        }
    }

    /// Write-through: returns once the writes to `pages` up to sequence `target` are
    /// acknowledged.
    func writeBack(pages: Range<UInt64>, through target: UInt64) throws(RemoteMemError) {
        try writeBack(through: target) { visit in
            for page in pages {
                if let frame = index.find(page), !visit(frame) { break }
            }
        }
    }

    /// Repeats until no frame offered by `frames` holds a write at or before `target` that is
    /// not acknowledged: claims such frames (a batch at a time) and writes them back, or waits
    /// for the write-backs and writers that hold them.
    private func writeBack(through target: UInt64, _ frames: ((Int) -> Bool) -> Void) throws(RemoteMemError) {
        try withUnsafeTemporaryAllocation(of: Int32.self, capacity: PageCacheLimits.writeBackBatchPagesMax) { (claimed) throws(RemoteMemError) in
            while true {
                lock.lock()
                var count = 0
                var waiting = false
                if dirtyCount > 0 {
                    frames { frame in
                        let state = states[frame]
                        guard state.isDirty, state.firstDirtySeq <= target else { return true }
                        if claimLocked(frame) {
                            claimed[count] = Int32(frame)
                            count += 1
                        } else {
                            waiting = true
                        }
                        return count < claimed.count
                    }
                }
                if count == 0 {
                    if !waiting {
                        lock.unlock()
                        return
                    }
                    changed.wait(lock, until: MonotonicInstant.now.adding(milliseconds: PageCacheLimits.waitSliceMillis))
                    lock.unlock()
                    continue
                }
                lock.unlock()
                try writeBackClaimed(UnsafeMutableBufferPointer(rebasing: claimed[..<count]))
            }
        }
    }

    /// The flusher thread: writes dirty pages back every `flushIntervalMillis`, continuously
    /// while more than `dirtyHighWaterPercent` of the frames are dirty, until `stop()`.
    func runFlusher() {
        let claimed = UnsafeMutableBufferPointer<Int32>.allocate(capacity: PageCacheLimits.writeBackBatchPagesMax)
        defer { claimed.deallocate() }
        lock.lock()
        defer { lock.unlock() }
        while !stopping {
            if dirtyCount == 0 {
                flusherWake.wait(lock)
                continue
            }
            if dirtyCount * 100 <= frameCount * PageCacheLimits.dirtyHighWaterPercent && !migrating.load(ordering: .relaxed) {
                flusherWake.wait(lock, until: MonotonicInstant.now.adding(milliseconds: options.flushIntervalMillis))
                if stopping { break }
            }
            var count = 0
            var scanned = 0
            while scanned < frameCount && count < claimed.count {
                let frame = flushCursor
                flushCursor = flushCursor + 1 == frameCount ? 0 : flushCursor + 1
                scanned += 1
                if claimLocked(frame) {
                    claimed[count] = Int32(frame)
                    count += 1
                    count += claimFollowingLocked(after: states[frame].page, into: claimed, from: count)
                }
            }
            if count == 0 {
                flusherWake.wait(lock, until: MonotonicInstant.now.adding(milliseconds: options.flushIntervalMillis))
                continue
            }
            lock.unlock()
            let result = Result { () throws(RemoteMemError) in
                try writeBackClaimed(UnsafeMutableBufferPointer(rebasing: claimed[..<count]))
            }
            lock.lock()
            switch result {
            case .success: backgroundError = nil
            case .failure(let error):
                backgroundError = error
                // The pages stay dirty; try again after a pause rather than spin on a dead or
                // full server.
                flusherWake.wait(lock, until: MonotonicInstant.now.adding(milliseconds: ClientLimits.reconnectBackoffMillisMin))
            }
        }
    }
}
