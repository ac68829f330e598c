import Foundation
import LinuxSystem
import MemxTesting
import RemoteMem
import Synchronization
import Testing

/// Replication on real `memx-server` processes: every page group on `--replicas` servers, reads
/// that fail over, writes that go on, and re-replication after a server dies.
@Suite("Replication", .serialized)
struct ReplicationTests {
    static let volumeBytes: UInt64 = 64 << 20
    static let chunk = 128 * 1024

    func data(_ offset: Int, _ count: Int, version: Int = 0) -> [UInt8] {
        var random = SeededRandom(seed: SeededRandom.defaultSeed ^ UInt64(offset) ^ UInt64(version) << 40)
        return random.bytes(count)
    }

    /// The events a volume reported.
    final class EventLog: Sendable {
        private let storage = Mutex<[VolumeEvent]>([])
        init() {}
        func append(_ event: VolumeEvent) { storage.withLock { $0.append(event) } }
        var all: [VolumeEvent] { storage.withLock { $0 } }
    }

    func options(replicas: Int? = nil, events: EventLog? = nil) -> RemotePageStore.Options {
        RemotePageStore.Options(cacheBytes: 4 << 20, connection: .init(requestTimeoutMillis: 1000, connectTimeoutMillis: 500),
                                replicas: replicas, report: { event in events?.append(event) })
    }

    /// The table's replicas of every placed group, as indices of the pool's servers (-1: a
    /// server id no live connection of `store` has: a dead server, or an old id of one that
    /// restarted).
    func placement(_ store: RemotePageStore) -> [[Int]] {
        let table = store.volume.groupTable
        let connections = store.volume.connections
        return (0..<table.groupCount).compactMap { group in
            let replicas = table.replicas(of: group)
            guard !replicas.isEmpty else { return nil }
            return replicas.map { index in
                guard let slot = connections.lastIndex(where: { $0.serverID == table.serverIDs[index] && $0.isConnected })
                else { return -1 }
                return store.volume.pool.firstIndex(of: connections[slot].address) ?? -1
            }
        }
    }

    /// Waits (up to 30 s) until the volume reported `count` re-admissions.
    func waitForReadmission(_ store: RemotePageStore, _ events: EventLog, count: Int = 1) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if events.all.filter({ $0.message.contains("re-admitted") }).count >= count { return true }
            usleep(50_000)
        }
        return false
    }

    /// Waits (up to 30 s) until every placed group has `count` replicas on live servers, none
    /// on `dead`.
    func waitForRepair(_ store: RemotePageStore, replicas count: Int, avoiding dead: Set<Int> = []) -> Bool {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let groups = placement(store)
            if groups.allSatisfy({ $0.count == count && dead.union([-1]).isDisjoint(with: $0) }) { return true }
            usleep(50_000)
        }
        return false
    }

    @Test("2 replicas on 3 servers: a killed server costs no error; its groups are copied again; a second kill loses nothing")
    func survivesTwoKills() throws {
        let pool = try ServerPool("repl-kill", count: 3)
        let events = EventLog()
        let store = try RemotePageStore(servers: pool.addresses, volume: "repl", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        #expect(store.volume.replicaCount == 2, "two replicas by default with three servers")
        let bytes = 24 << 20  // 6 groups, 6x the cache
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        let before = placement(store)
        #expect(before.count == 6 && before.allSatisfy { Set($0).count == 2 }, "\(before)")
        // Every server's frames: two copies of 24 MiB in all.
        let used = store.volume.serverStatistics().compactMap { try? $0.get().usedFrames }.reduce(0, +)
        #expect(used == 2 * UInt64(bytes) / 4096)

        let victim = before[1][0]
        _ = try pool.servers[victim].stop(signal: SIGKILL)
        // Every byte reads back at once, through the cache and the surviving replicas.
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk), "at \(offset)")
        }
        // Writes go on (to the healthy replicas) and FLUSH succeeds.
        for offset in stride(from: 0, to: 8 << 20, by: Self.chunk) {
            try store.write(at: UInt64(offset), data(offset, Self.chunk, version: 1))
        }
        try store.flush()
        #expect(store.volume.downServers == [victim])
        #expect(waitForRepair(store, replicas: 2, avoiding: [victim]), "\(placement(store)) \(events.all)")
        let progress = store.volume.repairProgress
        #expect(progress.groupsRepaired == before.filter { $0.contains(victim) }.count)
        #expect(progress.bytesCopied > 0 && progress.groupsLost == 0)
        #expect(events.all.contains { $0.kind == .problem && $0.message.contains("is down") })
        #expect(events.all.contains { $0.kind == .progress && $0.message.contains("re-replicated page group") })

        // A second server dies: the last one holds a copy of everything.
        let second = (0..<3).first { $0 != victim }!
        _ = try pool.servers[second].stop(signal: SIGKILL)
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            let expected = offset < 8 << 20 ? data(offset, Self.chunk, version: 1) : data(offset, Self.chunk)
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == expected, "at \(offset)")
        }
        let statistics = store.cache.statistics
        #expect(statistics.misses > 0, "the reads must have gone to the servers")
    }

    @Test("a backend started while a server is down opens the volume, serves everything, and copies the missing replicas")
    func startsWithoutADeadServer() throws {
        let pool = try ServerPool("repl-start", count: 3)
        let bytes = 24 << 20
        do {
            let first = try RemotePageStore(servers: pool.addresses, volume: "start", capacityBytes: Self.volumeBytes, options: options())
            for offset in stride(from: 0, to: bytes, by: Self.chunk) { try first.write(at: UInt64(offset), data(offset, Self.chunk)) }
            #expect(first.close() == nil)
        }
        _ = try pool.servers[0].stop(signal: SIGKILL)
        let events = EventLog()
        let store = try RemotePageStore(servers: pool.addresses, volume: "start", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        #expect(store.volume.connections.count == 2)
        #expect(events.all.contains { $0.message.contains("starting without it") })
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk), "at \(offset)")
        }
        try store.write(at: 0, data(0, Self.chunk, version: 1))
        try store.flush()
        #expect(waitForRepair(store, replicas: 2, avoiding: [-1]), "\(placement(store)) \(events.all)")
        #expect(try store.read(at: 0, count: Self.chunk) == data(0, Self.chunk, version: 1))
    }

    @Test("a stalled server (SIGSTOP): reads and writes fail over after the request timeout, nothing hangs or errs")
    func stalledServer() throws {
        let pool = try ServerPool("repl-stall", count: 3)
        let store = try RemotePageStore(servers: pool.addresses, volume: "stall", capacityBytes: Self.volumeBytes, options: options())
        defer { store.close() }
        let bytes = 16 << 20
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        let victim = placement(store)[0][0]
        let pid = pool.servers[victim].process.processIdentifier
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        let start = Date()
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk), "at \(offset)")
        }
        for offset in stride(from: 0, to: 4 << 20, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk, version: 2)) }
        try store.flush()
        #expect(store.volume.downServers == [victim])
        // One request timeout (1 s here) to notice, then no further waiting on that server.
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(waitForRepair(store, replicas: 2, avoiding: [victim]), "\(placement(store))")
        #expect(try store.read(at: 0, count: Self.chunk) == data(0, Self.chunk, version: 2))
    }

    @Test("a partitioned link (a proxy black-holes it) and a cut one (the proxy resets it): failover, no error, no hang")
    func partitionedAndCutLinks() throws {
        let pool = try ServerPool("repl-proxy", count: 3)
        let proxies = try pool.addresses.map { try FaultyProxy(target: $0) }
        defer { for proxy in proxies { proxy.stop() } }
        let events = EventLog()
        let store = try RemotePageStore(servers: proxies.map(\.address), volume: "proxy", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        let bytes = 16 << 20
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        let groups = placement(store)
        // A partition: nothing comes back from server A; the client notices by its timeout.
        let partitioned = groups[0][0]
        proxies[partitioned].set(.blackhole)
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk), "at \(offset)")
        }
        try store.write(at: 0, data(0, Self.chunk, version: 3))
        try store.flush()
        #expect(store.volume.downServers == [partitioned])
        #expect(waitForRepair(store, replicas: 2, avoiding: [partitioned]), "\(placement(store)) \(events.all)")
        // The partition heals: the server is re-admitted, without the group it missed a write
        // of (its copy was already replaced), and the data stays right.
        proxies[partitioned].set(.pass)
        #expect(waitForReadmission(store, events), "\(events.all)")
        #expect(store.volume.downServers.isEmpty)
        #expect(try store.read(at: 0, count: Self.chunk) == data(0, Self.chunk, version: 3))
        // A cut link: the next server's connection is reset and reconnects are refused.
        let cut = placement(store).first { !$0.contains(partitioned) }?.first ?? (partitioned + 1) % 3
        proxies[cut].set(.cut)
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            let expected = offset == 0 ? data(0, Self.chunk, version: 3) : data(offset, Self.chunk)
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == expected, "at \(offset)")
        }
        try store.write(at: UInt64(Self.chunk), data(Self.chunk, Self.chunk, version: 4))
        try store.flush()
        #expect(store.volume.downServers == [cut])
        #expect(try store.read(at: UInt64(Self.chunk), count: Self.chunk) == data(Self.chunk, Self.chunk, version: 4))
    }

    @Test("drain (one replica): the groups move to the other servers, its copy is freed, new groups avoid it, data stays")
    func drain() throws {
        let pool = try ServerPool("repl-drain", count: 3)
        let events = EventLog()
        let store = try RemotePageStore(servers: pool.addresses, volume: "drain", capacityBytes: Self.volumeBytes,
                                        options: options(replicas: 1, events: events))
        defer { store.close() }
        let bytes = 24 << 20
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        let leaving = placement(store)[0][0]
        let control = try ControlClient(connectingTo: pool.addresses[leaving])
        defer { control.close() }
        #expect(try control.volumeStat("drain").storedPages > 0)
        try control.serverDrain(true)
        #expect(try control.serverStat().isDraining)
        #expect(waitForRepair(store, replicas: 1, avoiding: [leaving]), "\(placement(store)) \(events.all)")
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? control.volumeStat("drain").storedPages) != 0 { usleep(50_000) }
        #expect(try control.volumeStat("drain").storedPages == 0, "the drained server still holds pages of the volume")
        #expect(events.all.contains { $0.message.contains("is draining") })
        // New groups go elsewhere, and everything reads back.
        try store.write(at: 48 << 20, data(48 << 20, Self.chunk))
        try store.flush()
        #expect(!placement(store).contains { $0.contains(leaving) })
        for offset in stride(from: 0, to: bytes, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk), "at \(offset)")
        }
        #expect(store.volume.downServers.isEmpty)
        try control.serverDrain(false)
        #expect(try !control.serverStat().isDraining)
    }

    @Test("heartbeat: a server that dies while the disk is idle is noticed and its groups copied before any I/O needs them")
    func idleFailureIsNoticed() throws {
        let pool = try ServerPool("repl-idle", count: 3)
        let store = try RemotePageStore(servers: pool.addresses, volume: "idle", capacityBytes: Self.volumeBytes, options: options())
        defer { store.close() }
        for offset in stride(from: 0, to: 12 << 20, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        let victim = placement(store)[0][0]
        _ = try pool.servers[victim].stop(signal: SIGKILL)
        // No reads or writes from here: only the once-a-second SERVER_STAT can notice.
        #expect(waitForRepair(store, replicas: 2, avoiding: [victim]), "\(placement(store))")
        #expect(store.volume.downServers == [victim])
    }

    @Test("--replicas is the volume's: reopening with another count is a clear error; more replicas than servers is refused")
    func replicaCountIsFixed() throws {
        let pool = try ServerPool("repl-count", count: 2)
        let store = try RemotePageStore(servers: pool.addresses, volume: "count", capacityBytes: Self.volumeBytes,
                                        options: options(replicas: 2))
        try store.write(at: 0, data(0, 4096))
        #expect(store.close() == nil)
        #expect(throws: RemoteMemError.self) {
            _ = try RemotePageStore(servers: pool.addresses, volume: "count", capacityBytes: Self.volumeBytes, options: options(replicas: 1))
        }
        do {
            _ = try RemotePageStore(servers: pool.addresses, volume: "count", capacityBytes: Self.volumeBytes, options: options(replicas: 1))
        } catch {
            #expect("\(error)".contains("pass --replicas 2"), "\(error)")
        }
        #expect(throws: RemoteMemError.self) {
            _ = try RemotePageStore(servers: pool.addresses, volume: "three", capacityBytes: Self.volumeBytes, options: options(replicas: 3))
        }
    }

    @Test("2 replicas on 2 servers: one dies, everything still reads and writes; the group stays under-replicated and says so")
    func twoServersOneDies() throws {
        let pool = try ServerPool("repl-two", count: 2)
        let events = EventLog()
        let store = try RemotePageStore(servers: pool.addresses, volume: "two", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        for offset in stride(from: 0, to: 8 << 20, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        _ = try pool.servers[0].stop(signal: SIGKILL)
        for offset in stride(from: 0, to: 8 << 20, by: Self.chunk) {
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == data(offset, Self.chunk))
        }
        // A new group is placed on the one healthy server, and written.
        try store.write(at: 40 << 20, data(40 << 20, Self.chunk))
        try store.flush()
        #expect(try store.read(at: 40 << 20, count: Self.chunk) == data(40 << 20, Self.chunk))
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && store.volume.repairProgress.groupsUnderReplicated == 0 { usleep(50_000) }
        #expect(store.volume.repairProgress.groupsUnderReplicated > 0)
        #expect(events.all.contains { $0.message.contains("no other healthy memory server") })
    }

    @Test("a server killed and restarted empty is re-admitted while the disk runs and refilled: then the other may die")
    func restartedServerIsRefilled() throws {
        let pool = try ServerPool("repl-refill", count: 2)
        let events = EventLog()
        let store = try RemotePageStore(servers: pool.addresses, volume: "refill", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        let bytes = 16 << 20
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        _ = try pool.servers[1].stop(signal: SIGKILL)
        // Writes go on to the one server left.
        for offset in stride(from: 0, to: 4 << 20, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk, version: 1)) }
        try store.flush()
        #expect(store.volume.downServers == [1])

        try pool.restart(1)
        #expect(waitForReadmission(store, events), "\(events.all)")
        #expect(waitForRepair(store, replicas: 2), "\(placement(store)) \(events.all)")
        #expect(store.volume.downServers.isEmpty)
        #expect(store.volume.repairProgress.serversReadmitted == 1)
        #expect(store.volume.repairProgress.groupsRepaired == 4)

        // The refilled server alone now serves every byte.
        _ = try pool.servers[0].stop(signal: SIGKILL)
        let misses = store.cache.statistics.misses
        for offset in stride(from: 0, to: bytes, by: Self.chunk).reversed() {
            let expected = offset < 4 << 20 ? data(offset, Self.chunk, version: 1) : data(offset, Self.chunk)
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == expected, "at \(offset)")
        }
        #expect(store.cache.statistics.misses - misses >= UInt64(bytes - (4 << 20)) / 4096, "the reads must reach the server")
    }

    @Test("a partitioned server that comes back keeps only the groups it missed no write of; the rest is copied to it again")
    func returningServerKeepsOnlyWhatItHasAll() throws {
        let pool = try ServerPool("repl-return", count: 2)
        let proxies = try pool.addresses.map { try FaultyProxy(target: $0) }
        defer { for proxy in proxies { proxy.stop() } }
        let events = EventLog()
        let store = try RemotePageStore(servers: proxies.map(\.address), volume: "return", capacityBytes: Self.volumeBytes,
                                        options: options(events: events))
        defer { store.close() }
        let bytes = 16 << 20  // 4 groups, each on both servers
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
        try store.flush()
        proxies[1].set(.blackhole)
        // Group 0 changes while server 1 cannot hear it: its copy there is stale from now on.
        for offset in stride(from: 0, to: 1 << 20, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk, version: 1)) }
        try store.flush()
        #expect(store.volume.downServers == [1])

        proxies[1].set(.pass)
        #expect(waitForReadmission(store, events), "\(events.all)")
        let readmitted = events.all.first { $0.message.contains("re-admitted") }?.message ?? ""
        #expect(readmitted.contains("keeps 3 page group(s)") && readmitted.contains("1 stale one(s)"), "\(readmitted)")
        #expect(waitForRepair(store, replicas: 2), "\(placement(store)) \(events.all)")
        #expect(store.volume.repairProgress.groupsRepaired == 1, "only the stale group is copied")

        // Server 0 goes away: server 1 must have group 0's new bytes, and the old ones elsewhere.
        proxies[0].set(.cut)
        let misses = store.cache.statistics.misses
        for offset in stride(from: 0, to: bytes, by: Self.chunk).reversed() {
            let expected = offset < 1 << 20 ? data(offset, Self.chunk, version: 1) : data(offset, Self.chunk)
            #expect(try store.read(at: UInt64(offset), count: Self.chunk) == expected, "at \(offset)")
        }
        #expect(store.cache.statistics.misses - misses >= UInt64(bytes - (4 << 20)) / 4096, "the reads must reach the server")
        #expect(store.volume.downServers == [0])
    }
}
