import LinuxSystem

/// A volume on a pool of memory servers, opened under a lease: its record exists on every
/// server, every server holds the same (highest) lease epoch for it, and its group table says
/// which server holds each 4 MiB page group (MEMX.md §4–§5).
///
/// Opening raises the epoch on every server (`VOLUME_OPEN` with a minimum epoch; servers that
/// answer with a lower epoch are re-opened at the highest one), so a backend that opened the
/// volume earlier is fenced: its next request fails with `.fenced`. Opening with another size
/// than the volume has is `.geometryMismatch`, never a resize.
///
/// Data (`PageBacking`): a run of pages is cut by group, then into requests of at most
/// `WireLimits.pagesPerRequestMax` pages, one per server and contiguous run; requests to
/// different servers are in flight together. A group is placed on first write
/// (`RemoteVolume+Placement.swift`); reading a never-placed group returns zeros with no round
/// trip.
///
/// The volume owns its connections: `close()` closes them.
public final class RemoteVolume: PageBacking, @unchecked Sendable {
    // SAFETY: `table`, `tableServer`, `metadataVersions`, `fencedError` and the per-slot
    // arrays `serverDown`, `serverDraining` are guarded by `tableLock`; placement
    // state (`statistics`, `placedSinceStat`) by `placementLock`. Slots are appended (and the
    // per-slot arrays grown) only by `admit`, holding `placementLock`, then `tableLock`
    // (RemoteVolume+Admission.swift). The rest is immutable after `open`.

    public let name: String
    public let capacityBytes: UInt64
    public let pageCount: UInt64
    /// The lease epoch this backend holds on every server.
    public let epoch: UInt64
    /// Every connection this volume made, by slot: those given at `open`, then one per
    /// re-admission of a server (append-only; a retired slot stays, marked down).
    public let connections: ConnectionSlots
    /// Each slot's handle for this volume on its server.
    var handles: UnsafeMutablePointer<UInt32> { connections.handles }
    /// The pool's servers, as given (some may have had no connection at `open`): a server with
    /// no healthy slot is tried again by the heartbeat and re-admitted when it answers.
    public let pool: [TCPAddress]
    let connectionOptions: ServerConnection.Options

    let tableLock = PosixLock()
    var table: GroupTable
    /// Table server index → connection index (nil: a server not in this pool).
    var tableServer: [Int?]
    /// The metadata version each server stores.
    var metadataVersions: [UInt64]
    /// Set once a server answered FENCED: every later request fails at once.
    var fencedError: RemoteMemError?

    /// Replicas each group keeps (the table's; fixed when the volume was created).
    public let replicaCount: Int
    /// Slots this backend stopped using: a request to them failed with a connection error or
    /// timed out. Their groups are served by the other replicas and copied elsewhere. A slot
    /// marked down never comes back (its connection is retired); a server that answers again
    /// is re-admitted in a new slot, as an empty server (RemoteVolume+Admission.swift).
    var serverDown: [Bool]
    /// Servers the operator is draining (`SERVER_DRAIN`, polled): nothing new is placed there
    /// and their groups are copied elsewhere; they keep serving meanwhile.
    var serverDraining: [Bool]
    /// Per group, the replica positions (bit r: `table.replica(r, of:)`) that missed a write or
    /// trim acknowledged by the others: their server was down or unmapped then, or failed it.
    /// A server that comes back keeps a group only if it missed nothing there
    /// (RemoteVolume+Admission.swift). Cleared when the group gets a new replica set.
    var missedWrites: [UInt8]
    /// Why each pool server (by `pool` index) could not be re-admitted last time (repair
    /// thread only): a new reason is logged once, not every heartbeat.
    var admissionFailure: [String?]
    /// When the heartbeat may try each pool server again (repair thread only).
    var admissionNotBefore: [MonotonicInstant]
    /// The group being copied to a new replica, and the new replica's connection: writes to
    /// that group go there too (guarded by `tableLock`).
    var copying: (group: Int, target: Int)?
    /// Shared by every write and trim; taken exclusively by the copy of one chunk of a group.
    let copyLock = PosixReadWriteLock()
    /// Where the volume reports failures and re-replication progress (memx-vhost's log).
    let report: @Sendable (VolumeEvent) -> Void
    /// Re-replication: woken when a server goes down.
    let repairWake = PosixCondition()
    var repairThread: OSThread?
    var closing = false
    var repairStatistics = RepairStatistics()
    /// Groups whose every replica is down (guarded by `tableLock`).
    var lostGroups = Set<Int>()

    let placementLock = PosixLock()
    var statistics: [ServerStatistics?]
    var statisticsTakenAt = MonotonicInstant(nanoseconds: 0)
    var placedSinceStat: [Int]

    // MARK: - Create, open, close

    /// Creates the volume on every server of `connections` (a server that already has it is
    /// fine; its size is checked at open, and it keeps the de-duplication policy it was created
    /// with). With `deduplicate` false the volume shares no frame with any other page
    /// (`NO_DEDUP`; a server older than de-duplication closes the connection on that flag).
    public static func create(name: String, capacityBytes: UInt64, on connections: [ServerConnection],
                              deduplicate: Bool = true) throws(RemoteMemError) {
        try validate(name: name, capacityBytes: capacityBytes, serverCount: connections.count)
        let payload = DedupMessages.volumeCreate(name: name, sizeBytes: capacityBytes,
                                                 flags: deduplicate ? 0 : DedupMessages.volumeFlagNoDedup)
        for connection in connections {
            let reply = try connection.call(.volumeCreate, payload: payload)
            guard reply.status == .ok || reply.status == .exists else {
                throw refusal(reply, connection, "VOLUME_CREATE")
            }
        }
    }

    /// Deletes the volume on every server (freeing its pages); a server without it is fine.
    public static func delete(name: String, on connections: [ServerConnection]) throws(RemoteMemError) {
        for connection in connections {
            let reply = try connection.call(.volumeDelete, payload: WireMessages.name(name))
            guard reply.status == .ok || reply.status == .notFound else { throw refusal(reply, connection, "VOLUME_DELETE") }
        }
    }

    /// Opens (and, with `create`, first creates) the volume on every server and takes its lease.
    /// Takes ownership of `connections`.
    public static func open(name: String, capacityBytes: UInt64, connections: [ServerConnection],
                            create: Bool = true, replicas: Int = 1, pool: [TCPAddress]? = nil, deduplicate: Bool = true,
                            report: @escaping @Sendable (VolumeEvent) -> Void = { _ in }) throws(RemoteMemError) -> RemoteVolume {
        try validate(name: name, capacityBytes: capacityBytes, serverCount: connections.count)
        // `pool` names servers given but unreachable now (a restart during an outage) too.
        var pool = pool ?? []
        for connection in connections where !pool.contains(connection.address) { pool.append(connection.address) }
        let servers = pool.count
        guard (1...min(4, servers)).contains(replicas) else {
            throw .invalidArgument("\(replicas) replicas need at least as many servers (\(servers) given; at most 4 replicas)")
        }
        if create { try Self.create(name: name, capacityBytes: capacityBytes, on: connections, deduplicate: deduplicate) }
        let opened = try agreeOnEpoch(name: name, connections: connections)
        for (i, reply) in opened.replies.enumerated() where reply.sizeBytes != capacityBytes {
            throw .geometryMismatch("""
                volume '\(name)' on \(connections[i].address) has \(reply.sizeBytes) bytes, not \(capacityBytes): \
                pass --size \(reply.sizeBytes) or delete the volume
                """)
        }
        let newest = opened.replies.indices.max { opened.replies[$0].metadataVersion < opened.replies[$1].metadataVersion }!
        let pageCount = capacityBytes / PageStoreLimits.pageSize
        let groupCount = GroupTable.groupCount(pageCount: pageCount)
        var table = GroupTable(groupCount: groupCount, replicaCount: replicas)
        if opened.replies[newest].metadataVersion > 0 {
            table = try GroupTable(decoding: opened.replies[newest].metadata)
            guard table.groupCount == groupCount, table.groupPages == ClientLimits.groupPages else {
                throw .corruptMetadata("volume '\(name)': group table has \(table.groupCount) groups of \(table.groupPages) pages")
            }
            guard table.replicaCount == replicas else {
                throw .geometryMismatch("""
                    volume '\(name)' keeps \(table.replicaCount) replica(s) of every page, not \(replicas): \
                    pass --replicas \(table.replicaCount)
                    """)
            }
        }
        let volume = RemoteVolume(name: name, capacityBytes: capacityBytes, epoch: opened.epoch,
                                  connections: connections, handles: opened.handles, pool: pool, table: table,
                                  versions: opened.replies.map(\.metadataVersion), report: report)
        volume.catchUpLaggingTables(newestVersion: opened.replies[newest].metadataVersion)
        do {
            try volume.startRepair()
        } catch {
            volume.close()
            throw error
        }
        return volume
    }

    private init(name: String, capacityBytes: UInt64, epoch: UInt64, connections: [ServerConnection],
                 handles: [UInt32], pool: [TCPAddress], table: GroupTable, versions: [UInt64],
                 report: @escaping @Sendable (VolumeEvent) -> Void) {
        self.replicaCount = table.replicaCount
        self.serverDown = Array(repeating: false, count: connections.count)
        self.serverDraining = Array(repeating: false, count: connections.count)
        self.admissionFailure = Array(repeating: nil, count: pool.count)
        self.admissionNotBefore = Array(repeating: MonotonicInstant(nanoseconds: 0), count: pool.count)
        self.missedWrites = Array(repeating: 0, count: table.groupCount)
        self.pool = pool
        self.connectionOptions = connections[0].options
        self.report = report
        self.name = name
        self.capacityBytes = capacityBytes
        self.pageCount = capacityBytes / PageStoreLimits.pageSize
        self.epoch = epoch
        let slots = ConnectionSlots(capacity: ClientLimits.connectionSlotsMax)
        for (connection, handle) in zip(connections, handles) { slots.append(connection, handle: handle) }
        self.connections = slots
        self.table = table
        self.metadataVersions = versions
        self.tableServer = []
        self.statistics = Array(repeating: nil, count: connections.count)
        self.placedSinceStat = Array(repeating: 0, count: connections.count)
        self.tableServer = mapTableServers(table)
    }

    /// Releases the lease on every server (`VOLUME_CLOSE`) and closes the connections.
    /// Errors are ignored: a server that is gone has nothing to release.
    public func close() {
        stopRepair()
        for (i, connection) in connections.enumerated() {
            _ = try? connection.call(.volumeClose, volume: handles[i], epoch: epoch)
            connection.close()
        }
    }

    /// Each server's capacity and load (`SERVER_STAT`).
    public func serverStatistics() -> [Result<ServerStatistics, RemoteMemError>] {
        connections.map { connection in
            Result { () throws(RemoteMemError) -> ServerStatistics in try Self.serverStatistics(connection) }
        }
    }

    /// A snapshot of the group table.
    public var groupTable: GroupTable { tableLock.withLock { table } }

    /// The pool index (into `connections`) of the server holding `page`, or nil if its group
    /// was never written.
    public func server(ofPage page: UInt64) -> Int? {
        tableLock.withLock { () -> Int? in
            guard let index = table.primary(of: Int(page / ClientLimits.groupPages)) else { return nil }
            return tableServer[index]
        }
    }

    // MARK: - Helpers

    static func validate(name: String, capacityBytes: UInt64, serverCount: Int) throws(RemoteMemError) {
        guard WireLimits.isValidName(name) else {
            throw .invalidArgument("volume name '\(name)' must be 1–64 of [A-Za-z0-9._-], not starting with '.'")
        }
        guard (1...ClientLimits.serversMax).contains(serverCount) else {
            throw .invalidArgument("a pool needs 1 to \(ClientLimits.serversMax) servers, not \(serverCount)")
        }
        guard capacityBytes > 0, capacityBytes % PageStoreLimits.pageSize == 0,
              capacityBytes <= PageStoreLimits.capacityBytesMax
        else { throw .invalidArgument("volume size \(capacityBytes) must be a positive multiple of 4 KiB up to 64 TiB") }
        let groups = GroupTable.groupCount(pageCount: capacityBytes / PageStoreLimits.pageSize)
        guard GroupTable.fits(groupCount: groups) else {
            throw .invalidArgument("volume size \(capacityBytes): its group table would exceed \(WireLimits.metadataBytesMax) bytes")
        }
    }

    static func serverStatistics(_ connection: ServerConnection) throws(RemoteMemError) -> ServerStatistics {
        let reply = try connection.call(.serverStat)
        guard reply.status == .ok else { throw refusal(reply, connection, "SERVER_STAT") }
        do {
            return try ServerStatistics(reply.payload)
        } catch {
            throw .protocolViolation(server: connection.address.description, reason: "SERVER_STAT reply: \(error)")
        }
    }

    /// VOLUME_STAT of volume `name` on one server (nil: the server does not have it).
    static func volumeStatistics(name: String, on connection: ServerConnection) throws(RemoteMemError) -> VolumeStatistics? {
        let reply = try connection.call(.volumeStat, payload: WireMessages.name(name))
        switch reply.status {
        case .ok:
            do {
                return try VolumeStatistics(reply.payload)
            } catch {
                throw .protocolViolation(server: connection.address.description, reason: "VOLUME_STAT reply: \(error)")
            }
        case .notFound:
            return nil
        default:
            throw refusal(reply, connection, "VOLUME_STAT")
        }
    }

    /// The error for a non-OK control reply.
    static func refusal(_ reply: ServerReply, _ connection: ServerConnection, _ operation: String) -> RemoteMemError {
        refusal(status: reply.header.status, connection, operation)
    }

    static func refusal(status: UInt16, _ connection: ServerConnection, _ operation: String) -> RemoteMemError {
        let server = connection.address.description
        switch WireStatus(rawValue: status) {
        case .full: return .full(server: server)
        case .some(let status): return .refused(server: server, operation: operation, status: status)
        case nil: return .protocolViolation(server: server, reason: "\(operation) answered with status \(status)")
        }
    }

    /// Table server index → the slot of the server with that id: the one that is up if any
    /// (a server re-admitted with the same id), else the last one (tableLock held).
    func mapTableServers(_ table: GroupTable) -> [Int?] {
        table.serverIDs.map { id in
            let slots = serverDown.indices.filter { connections[$0].serverID == id }
            return slots.last { !serverDown[$0] } ?? slots.last
        }
    }
}
