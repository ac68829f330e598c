/// Where a volume's pages live: the one interface between the block device and memory, whether
/// the embedded shared-memory pool (`SharedMemoryPageStore`) or, later, remote memory servers
/// behind a page cache.
///
/// Offsets and lengths are in bytes; the device checks them against the volume first, and the
/// store checks again. Unwritten bytes read as zero. Methods may be called from several queue
/// threads at once; each implementation says how it stays correct.
public protocol PageStore: AnyObject, Sendable {
    /// The volume's size in bytes (a multiple of `PageStoreLimits.pageSize`).
    var capacityBytes: UInt64 { get }
    /// Copies `destination.count` bytes at `offset` into `destination`.
    func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(PageStoreError)
    /// Stores `source` at `offset`.
    func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(PageStoreError)
    /// Makes `[offset, offset + length)` read as zeros and gives back the memory of every whole
    /// page in it (DISCARD and WRITE_ZEROES).
    func discard(at offset: UInt64, length: UInt64) throws(PageStoreError)
    /// Returns once every write completed before the call is durable in the store (FLUSH).
    func flush() throws(PageStoreError)
    /// Bytes of memory the store holds right now (statistics).
    var residentBytes: UInt64 { get }
}

/// Limits shared by every page store.
public enum PageStoreLimits {
    /// The unit of placement, caching and de-duplication: one x86 page.
    public static let pageSize: UInt64 = 4096
    /// Largest volume: 64 TiB (sector counts stay far below 2^64, and the embedded pool's
    /// mapping fits the 47-bit user address space many times over).
    public static let capacityBytesMax: UInt64 = 64 << 40
}

/// Why a page-store operation failed. The device answers the guest with IOERR either way; the
/// case says what to tell the operator.
public enum PageStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The range is outside the volume.
    case outOfRange(offset: UInt64, length: UInt64)
    /// The store has no memory left for new pages.
    case full
    /// A system call failed.
    case io(errno: Int32, operation: String)
    /// Opening a volume whose recorded geometry differs from what was asked.
    case geometryMismatch(String)
    /// The volume is served by another process.
    case busy(String)
    /// The volume's metadata is damaged or from an unknown format version.
    case corrupt(String)

    public var description: String {
        switch self {
        case .outOfRange(let offset, let length): "range \(offset)+\(length) is outside the volume"
        case .full: "the memory pool is full"
        case .io(let errno, let operation): "\(operation) failed: errno \(errno)"
        case .geometryMismatch(let why): why
        case .busy(let why): why
        case .corrupt(let why): why
        }
    }
}
