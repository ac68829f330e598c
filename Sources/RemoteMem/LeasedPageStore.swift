import LinuxSystem

/// A volume on memory servers whose lease moves with its VM (MEMX.md §5, research/vhost-user.md
/// §5): the store of `memx-vhost --server …`, with or without `--standby`.
///
/// States and what moves them (the device calls these on its control thread, in protocol order):
///
///     standby ──activate──▶ active ──handOff──▶ handedOff ──activate(afterHandoff)──▶ active
///                            ▲  │                    │               (nobody took the volume)
///                            │  migrationLogging     └──activate(afterHandoff)──▶ fenced
///                            │  (write-through)                (another backend opened it)
///                            └──────── activate (a new frontend: takes the lease) ◀── fenced
///
/// - `standby`: the volume exists on the servers with this size, but no lease is held and
///   nothing is cached; a migration destination waits here until QEMU starts its rings.
/// - `active`: a `RemotePageStore` holds the lease (epoch + 1 on open) and serves.
/// - `handedOff`: at the switchover everything was written back and the lease released
///   (VOLUME_CLOSE): requests under the old epoch are refused from now on.
/// - `fenced`: the frontend restarted the rings after a handoff, but another backend had
///   opened the volume since: the VM runs elsewhere, so this one must not serve it.
public final class LeasedPageStore: @unchecked Sendable {
    // SAFETY: `state` is guarded by `lock`. Transitions run on the vhost-user control thread
    // while no queue thread runs (before the first starts, after the last stopped); other
    // threads only read the state (metrics).

    public enum State {
        case standby
        case active(RemotePageStore)
        case handedOff(epoch: UInt64)
        case fenced(RemoteMemError)
    }

    public let servers: [TCPAddress]
    public let volume: String
    public let capacityBytes: UInt64
    public let options: RemotePageStore.Options
    /// Leave the cache's page list for the destination at a handoff, and warm the cache from
    /// the list the source left when taking the lease (`HOT_PAGES_PUT/GET`).
    public let hotPageHandoff: Bool
    private let lock = PosixLock()
    private var state: State
    /// The thread fetching the previous holder's hot pages, and its stop flag (guarded by `lock`).
    private var warming: OSThread?
    private var stopWarming = false

    /// Opens the volume at once (taking its lease), or with `standby` only checks that it
    /// exists on the servers with this size (`--standby`, a migration destination).
    public init(servers: [TCPAddress], volume: String, capacityBytes: UInt64, options: RemotePageStore.Options,
                standby: Bool, hotPageHandoff: Bool = true) throws(RemoteMemError) {
        self.hotPageHandoff = hotPageHandoff
        self.servers = servers
        self.volume = volume
        self.capacityBytes = capacityBytes
        self.options = options
        if standby {
            try Self.checkStandby(servers: servers, volume: volume, capacityBytes: capacityBytes, options: options)
            state = .standby
        } else {
            state = .active(try RemotePageStore(servers: servers, volume: volume, capacityBytes: capacityBytes, options: options))
        }
    }

    public var current: State { lock.withLock { state } }

    /// The store serving now, if active.
    public var serving: RemotePageStore? {
        lock.withLock { if case .active(let store) = state { store } else { nil } }
    }

    /// Before the rings start: returns the store to serve from, taking the lease if this
    /// backend does not hold it. After a handoff on the same frontend (`afterHandoff`), the lease
    /// is taken back only if no other backend opened the volume since; otherwise this backend
    /// is fenced and stays so for that frontend.
    public func activate(afterHandoff: Bool) throws(RemoteMemError) -> RemotePageStore {
        let now = lock.withLock { state }
        switch now {
        case .active(let store):
            return store
        case .fenced(let error) where afterHandoff:
            throw error
        case .handedOff(let epoch) where afterHandoff:
            if let newer = try newerEpoch(than: epoch) {
                let error = RemoteMemError.fenced(server: newer.server, volume: volume, epoch: epoch)
                lock.withLock { state = .fenced(error) }
                options.report(VolumeEvent(kind: .problem, message: """
                    the frontend restarted volume '\(volume)' here after handing it off, but another backend \
                    opened it since (epoch \(newer.epoch) on \(newer.server), ours was \(epoch)): the VM runs there; \
                    refusing to serve it (every request fails)
                    """))
                throw error
            }
        case .standby, .handedOff, .fenced:
            break
        }
        let store = try RemotePageStore(servers: servers, volume: volume, capacityBytes: capacityBytes, options: options)
        lock.withLock { state = .active(store) }
        if hotPageHandoff { startWarming(store) }
        return store
    }

    /// Fetches the pages the previous lease holder had cached, in the background, through the
    /// cache (so they are read under this backend's lease), and clears the list on the servers.
    private func startWarming(_ store: RemotePageStore) {
        guard let list = store.volume.hotPages(), list.pageCount > 0 else { return }
        store.volume.putHotPages(HotPageList(pages: []))
        let thread = try? OSThread(name: "memx-warm") { [self] in
            let started = MonotonicInstant.now
            let chunk = Int(WireLimits.pagesPerRequestMax)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk * WireLimits.pageSize, alignment: 4096)
            defer { buffer.deallocate() }
            var fetched = 0
            var failure: PageStoreError?
            warm: for run in list.runs {
                var page = run.firstPage
                let end = run.firstPage + UInt64(run.pageCount)
                while page < end {
                    if lock.withLock({ stopWarming }) || fetched >= store.cache.frameCount { break warm }
                    let count = Int(min(UInt64(chunk), end - page))
                    do throws(PageStoreError) {
                        try store.read(at: page * PageStoreLimits.pageSize,
                                       into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<(count * WireLimits.pageSize)]))
                    } catch {
                        failure = error
                        break warm
                    }
                    fetched += count
                    page += UInt64(count)
                }
            }
            let millis = started.millisecondsElapsed
            options.report(VolumeEvent(kind: failure == nil ? .progress : .problem, message: """
                warmed the cache with \(fetched) of the \(list.pageCount) pages the previous backend had cached, in \(millis) ms\
                \(failure.map { " (stopped: \($0))" } ?? "")
                """))
        }
        lock.withLock {
            stopWarming = false
            warming = thread
        }
    }

    private func joinWarming() {
        let thread = lock.withLock { () -> OSThread? in
            stopWarming = true
            defer { warming = nil }
            return warming
        }
        thread?.join()
    }

    /// The switchover: writes every dirty page back, releases the lease and disconnects.
    /// Returns the write-back error, if any (the lease is released either way: the destination
    /// takes the volume next, and pages not written back stay in the cache file).
    @discardableResult
    public func handOff() -> RemoteMemError? {
        guard let store = serving else { return nil }
        joinWarming()
        let epoch = store.volume.epoch
        if hotPageHandoff {
            // Before the lease goes: the list is stored under it.
            store.volume.putHotPages(HotPageList(pages: store.cache.residentPages()))
        }
        let failure = store.close()
        lock.withLock { state = .handedOff(epoch: epoch) }
        return failure
    }

    /// Migration started or ended (QEMU's dirty logging): while it runs, writes go through to
    /// the servers and the flusher empties the cache, so the switchover has little to write back.
    public func migrationLogging(_ on: Bool) {
        serving?.cache.setMigrating(on)
    }

    /// Closes the store if active (a clean stop of memx-vhost).
    @discardableResult
    public func close() -> RemoteMemError? {
        joinWarming()
        return serving?.close()
    }

    /// The first server whose copy of the volume has an epoch above `epoch`, if any.
    private func newerEpoch(than epoch: UInt64) throws(RemoteMemError) -> (server: String, epoch: UInt64)? {
        var reached = 0
        var lastError: RemoteMemError?
        for address in servers {
            let statistics: VolumeStatistics?
            do {
                statistics = try Self.volumeStatistics(address, volume: volume, options: options)
            } catch {
                lastError = error
                continue
            }
            reached += 1
            if let statistics, statistics.epoch > epoch { return (address.description, statistics.epoch) }
        }
        if reached == 0, let lastError { throw lastError }
        return nil
    }

    private static func checkStandby(servers: [TCPAddress], volume: String, capacityBytes: UInt64,
                                     options: RemotePageStore.Options) throws(RemoteMemError) {
        var found = false
        var lastError: RemoteMemError?
        for address in servers {
            do throws(RemoteMemError) {
                guard let statistics = try volumeStatistics(address, volume: volume, options: options) else { continue }
                guard statistics.sizeBytes == capacityBytes else {
                    throw RemoteMemError.geometryMismatch("""
                        volume '\(volume)' on \(address) has \(statistics.sizeBytes) bytes, not \(capacityBytes): \
                        a standby backend must have the source's --size
                        """)
                }
                found = true
            } catch {
                if case .geometryMismatch = error { throw error }
                lastError = error
            }
        }
        guard found else {
            throw lastError ?? .invalidArgument("""
                volume '\(volume)' does not exist on the memory servers: --standby waits for a volume another \
                backend serves (start the source first)
                """)
        }
    }

    /// VOLUME_STAT of `volume` on one server (nil: the server does not have it).
    static func volumeStatistics(_ address: TCPAddress, volume: String,
                                 options: RemotePageStore.Options) throws(RemoteMemError) -> VolumeStatistics? {
        let connection = try ServerConnection(address: address, options: options.connection)
        defer { connection.close() }
        return try RemoteVolume.volumeStatistics(name: volume, on: connection)
    }
}
