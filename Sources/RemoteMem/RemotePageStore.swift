import LinuxSystem

/// A volume whose pages live on memory servers, behind a page cache: the `PageStore` of
/// `memx-vhost --server …` (MEMX.md §3–§5).
///
/// Reads copy cache hits and fetch misses from each server in one round trip per server; writes
/// land in the cache and are written back in the background (or, with `writeThrough`, before
/// they complete); with `cacheDirectory`, the cache lives in a file that survives a crash of
/// the process, and the next process writes its dirty pages back before serving; FLUSH waits until every earlier write is acknowledged by the servers;
/// DISCARD drops cached pages and trims the servers. Sub-page writes read-modify-write.
///
/// Errors reach the block device as `PageStoreError` (`.full`, `.busy` when fenced, `.io`
/// otherwise); `lastError` keeps the detailed `RemoteMemError` for the operator's log.
/// Concurrent calls from several queue threads are safe (see `PageCache`).
public final class RemotePageStore: AsyncReadablePageStore, @unchecked Sendable {
    // SAFETY: `lastErrorStorage` is guarded by `errorLock`; everything else is immutable or
    // thread-safe by itself (`PageCache`, `RemoteVolume`).

    /// How a store is set up.
    public struct Options: Sendable {
        public var cacheBytes: UInt64
        public var writeThrough: Bool
        public var connection: ServerConnection.Options
        public var flushIntervalMillis: Int
        /// Where the cache file lives (`memx-<volume>.cache`, see `CacheMemory`); nil keeps the
        /// cache in anonymous memory, which a crash loses (tests only: write-back then loses
        /// acknowledged writes with the process).
        public var cacheDirectory: String?
        /// Copies of every page group, each on another server (nil: 2 with two or more
        /// servers, else 1). Fixed when the volume is created.
        public var replicas: Int?
        /// Whether a volume created here de-duplicates its pages on the servers (true) or
        /// shares no frame with any other page (memx-vhost --no-dedup). Fixed when the volume is
        /// created; an existing volume keeps its own.
        public var deduplicate = true
        /// Where failures and re-replication progress are reported (memx-vhost's log).
        public var report: @Sendable (VolumeEvent) -> Void

        public init(cacheBytes: UInt64 = 64 << 20, writeThrough: Bool = false,
                    connection: ServerConnection.Options = ServerConnection.Options(),
                    flushIntervalMillis: Int = PageCacheLimits.flushIntervalMillisDefault,
                    cacheDirectory: String? = nil, replicas: Int? = nil, deduplicate: Bool = true,
                    report: @escaping @Sendable (VolumeEvent) -> Void = { _ in }) {
            self.deduplicate = deduplicate
            self.cacheBytes = cacheBytes
            self.writeThrough = writeThrough
            self.connection = connection
            self.flushIntervalMillis = flushIntervalMillis
            self.cacheDirectory = cacheDirectory
            self.replicas = replicas
            self.report = report
        }
    }

    public let volume: RemoteVolume
    public let cache: PageCache
    private let errorLock = PosixLock()
    private var lastErrorStorage: RemoteMemError?
    private var closed = false

    /// Connects to every server, opens (creating if needed) `volume` with `capacityBytes`, takes
    /// its lease, and allocates the cache.
    public init(servers: [TCPAddress], volume name: String, capacityBytes: UInt64,
                options: Options = Options()) throws(RemoteMemError) {
        guard !servers.isEmpty else { throw .invalidArgument("no memory servers given") }
        guard Set(servers).count == servers.count else { throw .invalidArgument("a memory server is listed twice") }
        var connections: [ServerConnection] = []
        let replicas = options.replicas ?? min(2, servers.count)
        do throws(RemoteMemError) {
            var unreachable: [RemoteMemError] = []
            for address in servers {
                do throws(RemoteMemError) {
                    connections.append(try ServerConnection(address: address, options: options.connection))
                } catch {
                    // With copies elsewhere, a server that is down now (a backend restarted
                    // during an outage) is started without, like one that dies later.
                    guard replicas > 1, RemoteVolume.isServerFailure(error) else { throw error }
                    unreachable.append(error)
                }
            }
            if let first = unreachable.first {
                guard !connections.isEmpty else { throw first }
                for error in unreachable {
                    options.report(VolumeEvent(kind: .problem, message: """
                        \(error); starting without it: its page groups are served by their other replicas and copied elsewhere
                        """))
                }
            }
            volume = try RemoteVolume.open(name: name, capacityBytes: capacityBytes, connections: connections,
                                           replicas: replicas, pool: servers, deduplicate: options.deduplicate,
                                           report: options.report)
        } catch {
            for connection in connections { connection.close() }
            throw error
        }
        do {
            // The cache file is opened only now, with the lease held: the dirty pages a crashed
            // predecessor left in it are written back under our epoch before anything is served.
            var memory: CacheMemory?
            if let directory = options.cacheDirectory {
                memory = try CacheMemory(directory: directory, volume: name,
                                         frameCount: PageCache.frameCount(capacityBytes: options.cacheBytes), backing: volume,
                                         epoch: volume.epoch)
            }
            cache = try PageCache(backing: volume,
                                  options: PageCache.Options(capacityBytes: options.cacheBytes, writeThrough: options.writeThrough,
                                                             flushIntervalMillis: options.flushIntervalMillis),
                                  memory: memory)
        } catch {
            volume.close()
            throw error
        }
    }

    deinit { close() }

    /// Writes every dirty page back, releases the lease and closes the connections. Returns the
    /// write-back error, if any (the lease is released either way). Idempotent.
    @discardableResult
    public func close() -> RemoteMemError? {
        let first = errorLock.withLock { () -> Bool in
            defer { closed = true }
            return !closed
        }
        guard first else { return nil }
        var failure: RemoteMemError?
        do { try cache.flush() } catch { failure = error }
        cache.stop()
        // Every dirty page is on the servers: the file holds nothing to recover. After a failed
        // write-back it stays, and the next process to open the volume writes it back.
        if failure == nil { cache.memory.removeFile() }
        volume.close()
        return failure
    }

    /// The most recent failure, in full (the block device only sees `PageStoreError`).
    public var lastError: RemoteMemError? { errorLock.withLock { lastErrorStorage } }

    public var capacityBytes: UInt64 { volume.capacityBytes }

    public func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(PageStoreError) {
        try check(offset, UInt64(destination.count))
        do { try cache.read(at: offset, into: destination) } catch { throw failed(error) }
    }

    public func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(PageStoreError) {
        try check(offset, UInt64(source.count))
        do { try cache.write(at: offset, from: source) } catch { throw failed(error) }
    }

    public func discard(at offset: UInt64, length: UInt64) throws(PageStoreError) {
        try check(offset, length)
        do { try cache.discard(at: offset, length: length) } catch { throw failed(error) }
    }

    public func flush() throws(PageStoreError) {
        do { try cache.flush() } catch { throw failed(error) }
    }

    // MARK: - Reads in flight (AsyncReadablePageStore)

    public func makePendingRead(signal: CompletionSignal) -> PendingRead {
        PendingRead(signal: signal)
    }

    public func startRead(at offset: UInt64, length: Int, _ read: PendingRead) throws(PageStoreError) -> ReadStart {
        try check(offset, UInt64(length))
        return cache.startRead(at: offset, length: length, read)
    }

    public func flushSubmissions() { cache.flushSubmissions() }

    @inline(__always)
    public func pollRead(_ read: PendingRead) -> Bool { cache.pollRead(read) }

    public func waitRead(_ read: PendingRead) { cache.waitRead(read) }

    public func finishRead(_ read: PendingRead) throws(PageStoreError) {
        do { try cache.finishRead(read) } catch { throw failed(error) }
    }

    public func copyOut(_ read: PendingRead, at position: Int, into destination: UnsafeMutableRawBufferPointer) {
        cache.copyOut(read, at: position, into: destination)
    }

    public func endRead(_ read: PendingRead) { cache.endRead(read) }

    /// Cache bytes in use (the pages on the servers are reported by `volume.serverStatistics()`).
    public var residentBytes: UInt64 { cache.residentBytes }

    @inline(__always)
    private func check(_ offset: UInt64, _ length: UInt64) throws(PageStoreError) {
        guard offset <= capacityBytes, length <= capacityBytes - offset else {
            throw .outOfRange(offset: offset, length: length)
        }
    }

    private func failed(_ error: RemoteMemError) -> PageStoreError {
        errorLock.withLock { lastErrorStorage = error }
        return error.pageStoreError
    }
}
