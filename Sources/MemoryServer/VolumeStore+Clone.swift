import RemoteMem
import Synchronization

/// VOLUME_CLONE: a new volume with a template's size, metadata (its group table, so a backend
/// finds every group on the servers that hold the template's) and pages.
extension VolumeStore {
    /// Creates `name` as a copy of `template`: with both volumes de-duplicating, every page of
    /// the clone points at the template's frame (no frame taken, no byte copied) until one of
    /// them is written; otherwise the pages are copied into frames of the clone (indexed if it
    /// de-duplicates). All or nothing: `FULL` (nothing created) if the copy does not fit,
    /// `EXISTS` if the name is taken, `NOT_FOUND` without the template, `INVALID` for bad
    /// names or a clone of itself. The template may be in use; the clone is what the server
    /// holds at that instant (a backend's cache may hold newer writes: clone idle templates).
    public func clone(template templateName: String, name: String, deduplicate: Bool) throws(WireStatus) -> CloneResult {
        guard WireLimits.isValidName(templateName), WireLimits.isValidName(name), templateName != name else { throw .invalid }
        let template = try lookUp(name: templateName)
        guard !exists(name: name) else { throw .exists }
        let (state, framesTaken) = try template.state.withLock {
            (source: inout VolumeState) throws(WireStatus) -> (VolumeState, Int) in
            guard !source.deleted else { throw .notFound }
            var state = VolumeState()
            state.metadataVersion = source.metadataVersion
            state.metadata = source.metadata
            if template.deduplicates && deduplicate {
                index.withLock { index in
                    for frame in source.pages.values { index.adjust(frame, by: 1) }
                }
                state.pages = source.pages
                dedupCounters.recordClone(pages: source.pages.count, hashedPages: 0, duplicatePages: 0)
                return (state, 0)
            }
            let taken: Int
            (state.pages, taken) = try copy(source.pages, indexed: deduplicate)
            return (state, taken)
        }
        do {
            try publish(name: name) { handle in
                Volume(name: name, handle: handle, sizeBytes: template.sizeBytes, deduplicates: deduplicate, state: state)
            }
        } catch {
            // The name was taken meanwhile: give back what the clone holds.
            var frames = Array(state.pages.values)
            if deduplicate { frames = letGo(of: frames) }
            arena.release(&frames)
            throw error
        }
        return CloneResult(pages: UInt64(state.pages.count), framesTaken: UInt64(framesTaken))
    }

    /// Copies the pages of `map` (under its volume's lock) into frames of a new page map:
    /// private frames, or with `indexed`, frames of the index (a page whose content is stored
    /// already takes none). Returns the map and the frames taken; `FULL` with nothing taken.
    private func copy(_ map: [UInt64: UInt32], indexed: Bool) throws(WireStatus) -> ([UInt64: UInt32], Int) {
        var copied: [UInt64: UInt32] = [:]
        copied.reserveCapacity(map.count)
        guard indexed else {
            var frames = [UInt32](repeating: 0, count: map.count)
            let taken = frames.withUnsafeMutableBufferPointer { arena.allocate(into: $0) }
            guard taken else { throw .full }
            for ((page, source), frame) in zip(map, frames) {
                arena.withFrame(source) { arena.store(frame: frame, from: $0) }
                copied[page] = frame
            }
            dedupCounters.recordClone(pages: map.count, hashedPages: 0, duplicatePages: 0)
            return (copied, frames.count)
        }
        var taken = 0
        var duplicates = 0
        let complete = index.withLock { (index: inout FrameIndex) -> Bool in
            var collisions = 0
            for (page, source) in map {
                let hash = arena.withFrame(source) { hasher.hash($0) }
                if let stored = arena.withFrame(source, { index.find(hash, page: $0, in: arena, collisions: &collisions) }) {
                    index.adjust(stored, by: 1)
                    copied[page] = stored
                    duplicates += 1
                    continue
                }
                var frame: UInt32 = 0
                guard withUnsafeMutablePointer(to: &frame, { arena.allocate(into: UnsafeMutableBufferPointer(start: $0, count: 1)) })
                else { return false }
                arena.withFrame(source) { arena.store(frame: frame, from: $0) }
                index.insert(frame, hash: hash)
                copied[page] = frame
                taken += 1
            }
            return true
        }
        guard complete else {
            var frames = letGo(of: Array(copied.values))
            arena.release(&frames)
            throw .full
        }
        dedupCounters.recordClone(pages: map.count, hashedPages: map.count, duplicatePages: duplicates)
        return (copied, taken)
    }
}
