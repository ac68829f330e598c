import LinuxSystem

/// Making a batch of pages resident and pinned: lookups, CLOCK eviction, miss fetches, and
/// dropping pages (DISCARD).
extension PageCache {
    /// Marks a batch entry whose new frame must be fetched before use (a read miss, or a
    /// partial-page write miss: read-modify-write).
    static let fetchFlag: Int32 = 1 << 29
    static let frameMask: Int32 = (1 << 29) - 1

    /// Pins the frames of pages `first ..< first + batch.count` into `batch`, fetching missing
    /// ones. With `writing`, registers a write on every frame (and skips fetching pages the
    /// write covers whole). On return every page is valid; `release` undoes the pins.
    func acquire(first: UInt64, batch: UnsafeMutableBufferPointer<Int32>, writing: WriteRange?) throws(RemoteMemError) {
        while true {
            lock.lock()
            if isAnyFilling(first: first, count: batch.count) {
                changed.wait(lock, until: MonotonicInstant.now.adding(milliseconds: PageCacheLimits.waitSliceMillis))
                lock.unlock()
                continue
            }
            var needsFetch = false
            var exhaustedAt: Int?
            for i in 0..<batch.count {
                let page = first + UInt64(i)
                guard let entry = pinLocked(page) else {
                    exhaustedAt = i
                    break
                }
                batch[i] = entry
                if writing != nil { beginWrite(Int(entry & Self.frameMask)) }
                if entry & Self.newFrameFlag != 0 && !(writing?.coversWholePage(page) ?? false) {
                    batch[i] |= Self.fetchFlag
                    needsFetch = true
                    counters.misses += 1
                }
            }
            if let exhaustedAt {
                rollbackLocked(UnsafeMutableBufferPointer(rebasing: batch[..<exhaustedAt]), writing: writing != nil)
                lock.unlock()
                try makeRoom()
                continue
            }
            lock.unlock()
            if needsFetch { try fetch(first: first, batch: batch, writing: writing != nil) }
            return
        }
    }

    /// Pins `page`'s frame (a hit), or gives the page a new frame marked filling and returns it
    /// flagged `newFrameFlag` (a miss); nil if no frame is free or clean (lock held).
    func pinLocked(_ page: UInt64) -> Int32? {
        if let frame = index.find(page) {
            states[frame].pins += 1
            states[frame].referenced = true
            counters.hits += 1
            return Int32(frame)
        }
        guard let frame = allocateFrame() else { return nil }
        states[frame] = FrameState()
        states[frame].page = page
        states[frame].pins = 1
        states[frame].filling = true
        index.insert(page, frame: frame)
        return Int32(frame) | Self.newFrameFlag
    }

    /// Unpins a batch; ends the writes `acquire` registered. Returns the highest write sequence
    /// of the batch's frames (what write-through waits for).
    @discardableResult
    func release(_ batch: UnsafeMutableBufferPointer<Int32>, wrote: Bool) -> UInt64 {
        lock.lock()
        var last: UInt64 = 0
        for entry in batch {
            let frame = Int(entry & Self.frameMask)
            if wrote {
                states[frame].writers -= 1
                last = max(last, states[frame].writeSeq)
                // The guest's bytes are in the frame: from here a crash must not lose them.
                memory.recordDirty(frame, page: states[frame].page)
            }
            if entry & Self.newFrameFlag != 0 { states[frame].filling = false }
            states[frame].pins -= 1
        }
        changed.broadcast()
        if dirtyCount * 100 > frameCount * PageCacheLimits.dirtyHighWaterPercent { flusherWake.signal() }
        lock.unlock()
        return last
    }

    /// Registers a write on `frame` (lock held): a new sequence number, dirty from now on.
    private func beginWrite(_ frame: Int) {
        sequence += 1
        if !states[frame].isDirty {
            states[frame].firstDirtySeq = sequence
            dirtyCount += 1
            // An idle flusher sleeps until the first dirty page appears.
            if dirtyCount == 1 { flusherWake.signal() }
        }
        states[frame].writeSeq = sequence
        states[frame].writers += 1
    }

    func isAnyFilling(first: UInt64, count: Int) -> Bool {
        for i in 0..<count {
            if let frame = index.find(first + UInt64(i)), states[frame].filling { return true }
        }
        return false
    }

    /// Undoes a partial `acquire` (lock held): frees the frames it allocated, unpins the rest.
    func rollbackLocked(_ batch: UnsafeMutableBufferPointer<Int32>, writing: Bool) {
        for entry in batch {
            let frame = Int(entry & Self.frameMask)
            if entry & Self.newFrameFlag != 0 {
                freeLocked(frame)
            } else {
                states[frame].pins -= 1
                if writing { states[frame].writers -= 1 }
            }
        }
        changed.broadcast()
    }

    /// Forgets `frame`'s page and puts it on the free list (lock held).
    func freeLocked(_ frame: Int) {
        if states[frame].isDirty { dirtyCount -= 1 }
        memory.recordClean(frame)
        index.remove(states[frame].page)
        states[frame] = FrameState()
        freeFrames[freeCount] = Int32(frame)
        freeCount += 1
    }

    /// A frame for a new page (lock held): a free one, else the CLOCK victim: the first clean,
    /// unpinned frame whose referenced bit is clear (set bits are cleared as the hand passes,
    /// so a page hit again within one revolution stays). Nil if none in two revolutions.
    private func allocateFrame() -> Int? {
        if freeCount > 0 {
            freeCount -= 1
            return Int(freeFrames[freeCount])
        }
        for _ in 0..<(2 * frameCount) {
            let frame = hand
            hand = hand + 1 == frameCount ? 0 : hand + 1
            let state = states[frame]
            if state.pins > 0 || state.filling || state.flushing { continue }
            if state.referenced {
                states[frame].referenced = false
                continue
            }
            if state.isDirty { continue }
            index.remove(state.page)
            states[frame] = FrameState()
            counters.evictions += 1
            return frame
        }
        return nil
    }

    /// Fetches a batch's flagged frames in one backing call (the span from the first to the
    /// last miss; pages in between that are cached land in the sink), then marks them valid.
    private func fetch(first: UInt64, batch: UnsafeMutableBufferPointer<Int32>, writing: Bool) throws(RemoteMemError) {
        let low = batch.firstIndex { $0 & Self.fetchFlag != 0 }!
        let high = batch.lastIndex { $0 & Self.fetchFlag != 0 }!
        let count = high - low + 1
        let fetched = withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: count) { pages in
            for i in 0..<count {
                let entry = batch[low + i]
                pages[i] = entry & Self.fetchFlag != 0 ? address(Int(entry & Self.frameMask)) : sink.base
            }
            return withUnsafeTemporaryAllocation(of: PageRun.self, capacity: 1) { run in
                run[0] = PageRun(firstPage: first + UInt64(low), pageCount: count, pages: pages.baseAddress!)
                return Result { () throws(RemoteMemError) in try backing.readPages(UnsafeBufferPointer(run)) }
            }
        }
        lock.lock()
        defer { lock.unlock() }
        if case .failure(let error) = fetched {
            rollbackLocked(batch, writing: writing)
            throw error
        }
        for i in low...high where batch[i] & Self.fetchFlag != 0 {
            states[Int(batch[i] & Self.frameMask)].filling = false
            batch[i] &= ~Self.fetchFlag
        }
        changed.broadcast()
    }

    /// When no frame is free or clean: writes back a batch of dirty frames at the CLOCK hand so
    /// they become evictable (a dirty page is written back before its frame is reused), or,
    /// if every frame is busy, waits a moment for one to be released.
    private func makeRoom() throws(RemoteMemError) {
        try withUnsafeTemporaryAllocation(of: Int32.self, capacity: PageCacheLimits.evictionBatchPagesMax) { (claimed) throws(RemoteMemError) in
            lock.lock()
            var count = 0
            var frame = hand
            // Claim a batch of dirty frames from the CLOCK hand on (with the pages directly
            // after each): one write-back call sends them all before waiting, so a cache full
            // of scattered dirty pages pays one round trip per batch, not per page.
            for _ in 0..<frameCount where count < claimed.count {
                if claimLocked(frame) {
                    claimed[count] = Int32(frame)
                    count += 1 + claimFollowingLocked(after: states[frame].page, into: claimed, from: count + 1)
                }
                frame = frame + 1 == frameCount ? 0 : frame + 1
            }
            if count == 0 {
                changed.wait(lock, until: MonotonicInstant.now.adding(milliseconds: PageCacheLimits.waitSliceMillis))
                lock.unlock()
                return
            }
            lock.unlock()
            try writeBackClaimed(UnsafeMutableBufferPointer(rebasing: claimed[..<count]))
        }
    }

    /// Drops cached pages of `range` (DISCARD), waiting for frames in use; with `keepDirty`,
    /// pages written since (dirty) stay.
    func drop(_ range: Range<UInt64>, keepDirty: Bool) {
        lock.lock()
        defer { lock.unlock() }
        var busy = true
        while busy {
            busy = false
            let visit = { (frame: Int) in
                let state = self.states[frame]
                if keepDirty && state.isDirty { return }
                if state.pins > 0 || state.filling || state.flushing {
                    busy = true
                } else {
                    self.freeLocked(frame)
                }
            }
            if range.count <= frameCount {
                for page in range { if let frame = index.find(page) { visit(frame) } }
            } else {
                for frame in 0..<frameCount where !states[frame].isFree && range.contains(states[frame].page) { visit(frame) }
            }
            if busy { changed.wait(lock, until: MonotonicInstant.now.adding(milliseconds: PageCacheLimits.waitSliceMillis)) }
        }
    }
}
