/// One run of consecutive pages moving between a `PageBacking` and 4 KiB buffers without the
/// caller waiting (`PageBacking.startRead` / `pollTransfer`). The caller owns it, reuses it for
/// one transfer at a time, and fills `firstPage`, `pageCount` and `pages` before starting.
/// Everything is allocated once, so starting and polling allocate nothing.
public final class PageTransfer: @unchecked Sendable {
    // SAFETY: used by one thread at a time (its owner); the `AsyncRequest`s it holds are the
    // only state shared with receiver threads, and they publish with acquire/release.

    /// Pages one transfer can carry (the cache's largest batch).
    public static let pagesMax = PageCacheLimits.batchPagesMax
    /// Requests one transfer may need: `pagesMax` pages cut by `WireLimits.pagesPerRequestMax`
    /// and by at most one more group boundary per request.
    static let piecesMax = 2 * PageCacheLimits.batchPagesMax / Int(WireLimits.pagesPerRequestMax) + 1

    /// The first volume page of the run.
    public var firstPage: UInt64 = 0
    /// Pages in the run (at most `pagesMax`).
    public var pageCount = 0
    /// One 4 KiB buffer per page; they must stay valid until `pollTransfer` returns true.
    public let pages: UnsafeMutablePointer<UnsafeMutableRawPointer>
    /// The first failure, once the transfer finished (a FENCED reply wins).
    public internal(set) var error: RemoteMemError?

    let requests: [AsyncRequest]
    /// The requests of the current transfer: header, connection, first page index in `pages`.
    let headers: UnsafeMutablePointer<FrameHeader>
    let connections: UnsafeMutablePointer<Int>
    let offsets: UnsafeMutablePointer<Int>
    var pieceCount = 0
    var submitted = 0
    var finished = true

    public init(signal: CompletionSignal) {
        pages = .allocate(capacity: Self.pagesMax)
        requests = (0..<Self.piecesMax).map { _ in AsyncRequest(signal: signal) }
        headers = .allocate(capacity: Self.piecesMax)
        connections = .allocate(capacity: Self.piecesMax)
        offsets = .allocate(capacity: Self.piecesMax)
    }

    deinit {
        pages.deallocate()
        headers.deallocate()
        connections.deallocate()
        offsets.deallocate()
    }

    /// Clears the outcome of the previous transfer (by a backing, when one starts).
    func reset() {
        precondition(finished, "a transfer is restarted while in flight")
        pieceCount = 0
        submitted = 0
        error = nil
        finished = false
    }

    /// Adds one request to send (by a backing).
    func addPiece(_ header: FrameHeader, connection: Int, offset: Int) {
        headers[pieceCount] = header
        connections[pieceCount] = connection
        offsets[pieceCount] = offset
        pieceCount += 1
    }

    /// Ends the transfer with `error` (by a backing): nothing more will be sent.
    func fail(_ failure: RemoteMemError) {
        if error == nil { error = failure }
    }
}
