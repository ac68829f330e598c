import RemoteMem
import Synchronization

/// The volumes a server holds, by name and by handle, with their pages in one `PageArena`:
/// the server's whole state, independent of sockets (docs/PROTOCOL.md, "Opcodes").
///
/// Pages of de-duplicating volumes (the default) are stored once per content: the
/// `FrameIndex` finds a frame with the same bytes and the page points at it (docs/DEDUP.md).
///
/// Every operation reports its outcome as a `WireStatus` thrown with typed throws (`.ok` is
/// never thrown). Thread-safe: the name table has one lock held only for lookups and
/// insertions; each volume has its own lock for its lease, metadata and page map, held while
/// its pages are copied (at most 128 KiB) and never during socket I/O; the index has one lock,
/// held by writes, trims and deletes of de-duplicating volumes while they change share counts.
/// Lock order: table, then volume, then index, then arena.
public final class VolumeStore: Sendable {
    public let arena: PageArena
    /// How page contents are hashed for the index (MX128 with a random key; weak in tests).
    public let hasher: PageHasher
    /// De-duplication totals since start (`DEDUP_STAT`, metrics).
    public let dedupCounters = DedupCounters()
    let index: Mutex<FrameIndex>
    private let table: Mutex<Table>

    private struct Table {
        var byName: [String: Volume] = [:]
        var byHandle: [UInt32: Volume] = [:]
        /// The next handle; 0 means "no volume" on the wire and is never issued.
        var nextHandle: UInt32 = 1
    }

    /// A store lending `arena`'s frames, hashing pages with `hasher` (tests pass a weak one to
    /// force collisions). Throws if the index's address space cannot be reserved.
    public init(arena: PageArena, hasher: PageHasher = .random()) throws(MemoryServerError) {
        self.arena = arena
        self.hasher = hasher
        index = Mutex(try FrameIndex(capacityFrames: arena.capacityFrames))
        table = Mutex(Table())
    }

    /// Volumes held.
    public var volumeCount: Int { table.withLock { $0.byName.count } }

    /// Set by `SERVER_DRAIN`: backends move their page groups off this server. It keeps
    /// serving (reads of the groups being moved, writes until they are) and forgets nothing.
    public let draining = Atomic<Bool>(false)

    /// VOLUME_CREATE: a new, empty volume of `sizeBytes` (a positive multiple of 4 KiB up to
    /// `WireLimits.volumeBytesMax`), de-duplicating unless `deduplicate` is false. `EXISTS` if
    /// the name is taken, `FULL` at `WireLimits.volumesMax` volumes, `INVALID` for a bad name
    /// or size.
    public func create(name: String, sizeBytes: UInt64, deduplicate: Bool = true) throws(WireStatus) {
        guard WireLimits.isValidName(name) else { throw .invalid }
        guard sizeBytes > 0, sizeBytes % UInt64(WireLimits.pageSize) == 0, sizeBytes <= WireLimits.volumeBytesMax else {
            throw .invalid
        }
        try publish(name: name) { handle in Volume(name: name, handle: handle, sizeBytes: sizeBytes, deduplicates: deduplicate) }
    }

    /// Adds the volume `make` builds (given its new handle) under `name`: `EXISTS` if the name is
    /// taken, `FULL` at `WireLimits.volumesMax` volumes or when handles run out.
    func publish(name: String, _ make: (UInt32) -> Volume) throws(WireStatus) {
        try table.withLock { (table: inout Table) throws(WireStatus) in
            guard table.byName[name] == nil else { throw .exists }
            guard table.byName.count < WireLimits.volumesMax, table.nextHandle != 0 else { throw .full }
            let volume = make(table.nextHandle)
            table.nextHandle &+= 1
            table.byName[name] = volume
            table.byHandle[volume.handle] = volume
        }
    }

    /// True if a volume is named `name` (clone checks this before doing the work).
    func exists(name: String) -> Bool { table.withLock { $0.byName[name] != nil } }

    /// VOLUME_OPEN: takes the lease with epoch `max(stored + 1, minimumEpoch)`; every request
    /// carrying an older epoch is fenced from now on.
    public func open(name: String, minimumEpoch: UInt64) throws(WireStatus) -> OpenedVolume {
        let volume = try lookUp(name: name)
        return try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> OpenedVolume in
            guard !state.deleted else { throw .notFound }
            guard state.epoch < UInt64.max else { throw .invalid }
            state.epoch = max(state.epoch + 1, minimumEpoch)
            state.leaseHeld = true
            return OpenedVolume(handle: volume.handle, epoch: state.epoch, sizeBytes: volume.sizeBytes,
                                metadataVersion: state.metadataVersion, metadata: state.metadata)
        }
    }

    /// VOLUME_CLOSE: releases the lease if `epoch` is current (again: fine); afterwards requests
    /// with that epoch are fenced until the next open.
    public func close(handle: UInt32, epoch: UInt64) throws(WireStatus) {
        let volume = try lookUp(handle: handle)
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) in
            guard !state.deleted else { throw .notFound }
            if epoch < state.epoch { throw .fenced }
            if epoch > state.epoch { throw .invalid }
            state.leaseHeld = false
        }
    }

    /// VOLUME_DELETE: forgets the volume and frees its frames, whoever holds its lease.
    public func delete(name: String) throws(WireStatus) {
        let volume = try table.withLock { (table: inout Table) throws(WireStatus) -> Volume in
            guard let volume = table.byName.removeValue(forKey: name) else { throw .notFound }
            table.byHandle[volume.handle] = nil
            return volume
        }
        var frames = volume.state.withLock { state in
            state.deleted = true
            var frames = Array(state.pages.values)
            state.pages = [:]
            if volume.deduplicates { frames = letGo(of: frames) }
            return frames
        }
        arena.release(&frames)
    }

    /// The pages of a de-duplicating volume let go of `frames` (one entry per page): returns
    /// the frames no page points at any more, out of the index, for the caller to give back to
    /// the arena (outside its locks). Called under the volume's lock.
    func letGo(of frames: [UInt32]) -> [UInt32] {
        index.withLock { index in frames.filter { index.release($0) } }
    }

    /// VOLUME_STAT.
    public func stat(name: String) throws(WireStatus) -> VolumeStatus {
        let volume = try lookUp(name: name)
        return try status(of: volume)
    }

    /// VOLUME_LIST: every volume, by name.
    public func list() -> [VolumeStatus] {
        allVolumes().compactMap { try? status(of: $0) }.sorted { $0.name < $1.name }
    }

    /// Every volume held now.
    func allVolumes() -> [Volume] { table.withLock { Array($0.byName.values) } }

    /// METADATA_PUT: replaces the metadata if its version is still `expectedVersion`
    /// (`CONFLICT` otherwise), under the lease.
    public func putMetadata(handle: UInt32, epoch: UInt64, expectedVersion: UInt64, newVersion: UInt64,
                            metadata: [UInt8]) throws(WireStatus) {
        guard metadata.count <= WireLimits.metadataBytesMax else { throw .invalid }
        let volume = try lookUp(handle: handle)
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) in
            try state.checkLease(epoch)
            guard state.metadataVersion == expectedVersion else { throw .conflict }
            state.metadataVersion = newVersion
            state.metadata = metadata
        }
    }

    /// HOT_PAGES_PUT: replaces the volume's hot-page list, under the lease.
    public func putHotPages(handle: UInt32, epoch: UInt64, list: [UInt8]) throws(WireStatus) {
        guard list.count <= WireLimits.hotPagesBytesMax else { throw .invalid }
        let volume = try lookUp(handle: handle)
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) in
            try state.checkLease(epoch)
            state.hotPages = list
        }
    }

    /// HOT_PAGES_GET: the volume's hot-page list, under the lease.
    public func hotPages(handle: UInt32, epoch: UInt64) throws(WireStatus) -> [UInt8] {
        let volume = try lookUp(handle: handle)
        return try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> [UInt8] in
            try state.checkLease(epoch)
            return state.hotPages
        }
    }

    // MARK: - Lookups

    func lookUp(name: String) throws(WireStatus) -> Volume {
        guard let volume = table.withLock({ $0.byName[name] }) else { throw .notFound }
        return volume
    }

    func lookUp(handle: UInt32) throws(WireStatus) -> Volume {
        guard let volume = table.withLock({ $0.byHandle[handle] }) else { throw .notFound }
        return volume
    }

    private func status(of volume: Volume) throws(WireStatus) -> VolumeStatus {
        try volume.state.withLock { (state: inout VolumeState) throws(WireStatus) -> VolumeStatus in
            guard !state.deleted else { throw .notFound }
            return VolumeStatus(name: volume.name, sizeBytes: volume.sizeBytes, storedPages: UInt64(state.pages.count),
                                epoch: state.epoch, metadataVersion: state.metadataVersion)
        }
    }
}
