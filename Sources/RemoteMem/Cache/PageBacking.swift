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
    /// Starts filling `transfer`'s run without waiting; its `signal` is told as pieces finish.
    /// Never blocks on the network.
    func startRead(_ transfer: PageTransfer)
    /// Sends what could not be sent yet (a full window) and returns true once the transfer has
    /// finished (`transfer.error` says how); after true, nothing writes into its pages.
    func pollTransfer(_ transfer: PageTransfer) -> Bool
    /// Waits until `pollTransfer` would return true.
    func waitTransfer(_ transfer: PageTransfer)
    /// Sends the requests `startRead` queued (it may hold them back to send a batch at once).
    func flushSubmissions()
}

/// Backings that cannot read asynchronously (test fakes) read at once in `startRead`.
extension PageBacking {
    public func startRead(_ transfer: PageTransfer) {
        transfer.reset()
        let result = withUnsafeTemporaryAllocation(of: PageRun.self, capacity: 1) { run in
            run[0] = PageRun(firstPage: transfer.firstPage, pageCount: transfer.pageCount, pages: transfer.pages)
            return Result { () throws(RemoteMemError) in try readPages(UnsafeBufferPointer(run)) }
        }
        if case .failure(let error) = result { transfer.fail(error) }
        transfer.finished = true
    }

    public func pollTransfer(_ transfer: PageTransfer) -> Bool { transfer.finished }

    public func waitTransfer(_ transfer: PageTransfer) {}

    public func flushSubmissions() {}
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
