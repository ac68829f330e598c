/// Where a `PageCache` fetches missing pages and writes dirty ones back: a volume on memory
/// servers (`RemoteVolume`), or a fake in tests. Page-granular and batched: one call carries
/// several runs so an implementation can send them to different servers in parallel.
///
/// Implementations must be safe to call from several threads at once, and must not return
/// until no thread of theirs touches the runs' page buffers any more (even on error).
public protocol PageBacking: AnyObject, Sendable {
    /// The volume's size in pages.
    var pageCount: UInt64 { get }
    /// Fills each run's pages (4 KiB each) with the stored data; unwritten pages read as zeros.
    func readPages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError)
    /// Stores each run's pages; returns once the store acknowledged all of them.
    func writePages(_ runs: UnsafeBufferPointer<PageRun>) throws(RemoteMemError)
    /// Makes `count` pages from `firstPage` read as zeros and frees their memory.
    func trimPages(from firstPage: UInt64, count: UInt64) throws(RemoteMemError)
}

/// Consecutive volume pages and, for each, the 4 KiB buffer holding or receiving its data. The
/// buffers need not be adjacent (cache frames are not); `pages` points at `pageCount` of them.
public struct PageRun: @unchecked Sendable {
    // SAFETY: a run is a borrowed view the caller keeps valid for the duration of one
    // `PageBacking` call; nothing stores it.
    public var firstPage: UInt64
    public var pageCount: Int
    public var pages: UnsafeMutablePointer<UnsafeMutableRawPointer>

    public init(firstPage: UInt64, pageCount: Int, pages: UnsafeMutablePointer<UnsafeMutableRawPointer>) {
        self.firstPage = firstPage
        self.pageCount = pageCount
        self.pages = pages
    }
}
