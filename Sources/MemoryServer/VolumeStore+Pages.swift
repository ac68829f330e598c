import RemoteMem
import Synchronization

/// The data operations (READ, WRITE, TRIM): page ranges checked against the request limits and
/// the volume, the lease checked, then pages copied under the volume's lock.
extension VolumeStore {
    /// READ: copies pages `[page, page + pageCount)` into `destination` (pageCount × 4 KiB
    /// bytes); unwritten pages read as zeros.
    public func read(handle: UInt32, epoch: UInt64, page: UInt64, pageCount: UInt32,
                     into destination: UnsafeMutableRawBufferPointer) throws(WireStatus) {
        let count = try checkedCount(pageCount, max: WireLimits.pagesPerRequestMax)
        precondition(destination.count >= count * WireLimits.pageSize, "read buffer too small")
        let volume = try lookUp(handle: handle)
        try checkRange(volume, page: page, count: count)
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) in
            try state.checkLease(epoch)
            for i in 0..<count {
                // SAFETY: `destination` holds count pages (precondition above); page i is inside.
                let target = destination.baseAddress! + i * WireLimits.pageSize
                if let frame = state.pages[page + UInt64(i)] {
                    arena.load(frame: frame, into: target)
                } else {
                    target.initializeMemory(as: UInt8.self, repeating: 0, count: WireLimits.pageSize)
                }
            }
        }
    }

    /// WRITE: stores `source` (pageCount × 4 KiB bytes) at `[page, page + pageCount)`. Frames
    /// for every new page are taken before any byte is copied: if the arena cannot give them
    /// all the request is `FULL` and nothing of it is applied. On a de-duplicating volume a page
    /// whose content is stored already takes no frame (VolumeStore+Dedup.swift).
    public func write(handle: UInt32, epoch: UInt64, page: UInt64, pageCount: UInt32,
                      from source: UnsafeRawBufferPointer) throws(WireStatus) {
        let count = try checkedCount(pageCount, max: WireLimits.pagesPerRequestMax)
        precondition(source.count == count * WireLimits.pageSize, "write payload is not pageCount pages")
        let volume = try lookUp(handle: handle)
        try checkRange(volume, page: page, count: count)
        if volume.deduplicates {
            try writeDeduplicated(volume, epoch: epoch, page: page, count: count, from: source)
            return
        }
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) in
            try state.checkLease(epoch)
            var newPages = 0
            for i in 0..<count where state.pages[page + UInt64(i)] == nil { newPages += 1 }
            // At most pagesPerRequestMax frames: on the stack, no allocation per request.
            try withUnsafeTemporaryAllocation(of: UInt32.self, capacity: Int(WireLimits.pagesPerRequestMax)) {
                (scratch: UnsafeMutableBufferPointer<UInt32>) throws(WireStatus) in
                let frames = UnsafeMutableBufferPointer(rebasing: scratch[0..<newPages])
                guard arena.allocate(into: frames) else { throw .full }
                var next = 0
                for i in 0..<count {
                    let index = page + UInt64(i)
                    let frame: UInt32
                    if let existing = state.pages[index] {
                        frame = existing
                    } else {
                        frame = frames[next]
                        next += 1
                        state.pages[index] = frame
                    }
                    // SAFETY: `source` holds count pages (precondition above); page i is inside.
                    arena.store(frame: frame, from: source.baseAddress! + i * WireLimits.pageSize)
                }
            }
        }
    }

    /// TRIM: pages `[page, page + pageCount)` read as zeros again and their frames go back to
    /// the arena (and their memory to the kernel).
    public func trim(handle: UInt32, epoch: UInt64, page: UInt64, pageCount: UInt32) throws(WireStatus) {
        let count = try checkedCount(pageCount, max: WireLimits.trimPagesMax)
        let volume = try lookUp(handle: handle)
        try checkRange(volume, page: page, count: count)
        let end = page + UInt64(count)
        var frames = try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> [UInt32] in
            try state.checkLease(epoch)
            var frames: [UInt32] = []
            if count <= state.pages.count {
                for index in page..<end {
                    if let frame = state.pages.removeValue(forKey: index) { frames.append(frame) }
                }
            } else {
                // Fewer stored pages than trimmed ones: walk the map instead of the range.
                let trimmed = state.pages.filter { $0.key >= page && $0.key < end }
                for (index, frame) in trimmed {
                    state.pages[index] = nil
                    frames.append(frame)
                }
            }
            // Shared frames stay while other pages point at them.
            return volume.deduplicates ? letGo(of: frames) : frames
        }
        // Outside the volume's lock: the frames are no longer reachable from any page.
        arena.release(&frames)
    }

    /// `pageCount` as an Int if it is 1...max, else `INVALID`.
    func checkedCount(_ pageCount: UInt32, max: UInt32) throws(WireStatus) -> Int {
        guard pageCount >= 1, pageCount <= max else { throw .invalid }
        return Int(pageCount)
    }

    /// `INVALID` unless `[page, page + count)` lies inside the volume.
    func checkRange(_ volume: Volume, page: UInt64, count: Int) throws(WireStatus) {
        guard page < volume.pageCount, UInt64(count) <= volume.pageCount - page else { throw .invalid }
    }
}
