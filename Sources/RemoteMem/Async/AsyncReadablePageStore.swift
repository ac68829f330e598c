/// A page store whose reads can stay in flight while the caller goes on: the remote store,
/// whose misses wait for a memory server. The block device keeps many such reads in flight per
/// queue and completes them as they finish, so its queue thread never waits on the network.
///
/// The life of one read: `startRead` → (`.fetching`: `pollRead` until true, then `finishRead`)
/// → `copyOut` as often as needed → `endRead`. If `finishRead` throws, the read is over (no
/// `endRead`). `.mustBlock` means the read cannot proceed without waiting; the caller then
/// finishes its own reads in flight (they may hold what this one waits for) and uses `read`.
public protocol AsyncReadablePageStore: PageStore {
    /// Per-read state, made once per in-flight slot (allocates; not on the data path).
    func makePendingRead(signal: CompletionSignal) -> PendingRead
    func startRead(at offset: UInt64, length: Int, _ read: PendingRead) throws(PageStoreError) -> ReadStart
    /// Sends what `startRead` queued: after a batch of starts, and before waiting for anything.
    func flushSubmissions()
    func pollRead(_ read: PendingRead) -> Bool
    func waitRead(_ read: PendingRead)
    func finishRead(_ read: PendingRead) throws(PageStoreError)
    func copyOut(_ read: PendingRead, at position: Int, into destination: UnsafeMutableRawBufferPointer)
    func endRead(_ read: PendingRead)
}
