import RemoteMem
import Synchronization

/// One volume held by a server: its fixed identity, and its state behind the volume's own lock
/// (so requests on different volumes never wait for each other).
final class Volume: Sendable {
    let name: String
    /// Stable for the volume's life and never reused by this server process, so a handle from
    /// before a DELETE and re-CREATE of the same name finds nothing (`NOT_FOUND`).
    let handle: UInt32
    let sizeBytes: UInt64
    /// The volume's de-duplication policy, fixed at creation: true, its pages point at frames
    /// of the server's `FrameIndex`, shared with every page of the same content; false (a
    /// tenant that shares nothing), each page has a frame of its own, never indexed.
    let deduplicates: Bool
    let state: Mutex<VolumeState>

    init(name: String, handle: UInt32, sizeBytes: UInt64, deduplicates: Bool, state: VolumeState = VolumeState()) {
        self.name = name
        self.handle = handle
        self.sizeBytes = sizeBytes
        self.deduplicates = deduplicates
        self.state = Mutex(state)
    }

    /// Pages in the volume.
    var pageCount: UInt64 { sizeBytes / UInt64(WireLimits.pageSize) }
}

/// What changes in a volume: its lease, metadata and page map. Only touched under
/// `Volume.state`'s lock.
struct VolumeState {
    /// The lease epoch: 0 until the first VOLUME_OPEN, then raised by every open.
    var epoch: UInt64 = 0
    /// True from VOLUME_OPEN until a VOLUME_CLOSE with the current epoch.
    var leaseHeld = false
    var metadataVersion: UInt64 = 0
    var metadata: [UInt8] = []
    /// The hot-page list the last lease holder left for the next (HOT_PAGES_PUT): a hint to
    /// warm a cache with, never data.
    var hotPages: [UInt8] = []
    /// Page index → arena frame, for written pages only (unwritten pages read as zeros). On a
    /// de-duplicating volume the frame may be shared (its `FrameIndex` share count says by how
    /// many pages, of any volume) and is never written in place.
    var pages: [UInt64: UInt32] = [:]
    /// Set by VOLUME_DELETE: a request that looked the volume up just before must not touch it.
    var deleted = false

    /// The lease check every data request, METADATA_PUT and VOLUME_CLOSE makes: an epoch older
    /// than the volume's, or a released lease, is `FENCED` (another backend has, or may take,
    /// the volume); an epoch this server never issued is `INVALID`.
    func checkLease(_ requestEpoch: UInt64) throws(WireStatus) {
        if deleted { throw .notFound }
        if requestEpoch < epoch { throw .fenced }
        if requestEpoch > epoch { throw .invalid }
        if !leaseHeld { throw .fenced }
    }
}

/// The result of VOLUME_OPEN.
public struct OpenedVolume: Equatable, Sendable {
    public var handle: UInt32
    public var epoch: UInt64
    public var sizeBytes: UInt64
    public var metadataVersion: UInt64
    public var metadata: [UInt8]

    public init(handle: UInt32, epoch: UInt64, sizeBytes: UInt64, metadataVersion: UInt64, metadata: [UInt8]) {
        self.handle = handle
        self.epoch = epoch
        self.sizeBytes = sizeBytes
        self.metadataVersion = metadataVersion
        self.metadata = metadata
    }
}

/// One volume's numbers (VOLUME_STAT, and VOLUME_LIST without epoch and metadata version).
public struct VolumeStatus: Equatable, Sendable {
    public var name: String
    public var sizeBytes: UInt64
    public var storedPages: UInt64
    public var epoch: UInt64
    public var metadataVersion: UInt64

    public init(name: String, sizeBytes: UInt64, storedPages: UInt64, epoch: UInt64, metadataVersion: UInt64) {
        self.name = name
        self.sizeBytes = sizeBytes
        self.storedPages = storedPages
        self.epoch = epoch
        self.metadataVersion = metadataVersion
    }
}
