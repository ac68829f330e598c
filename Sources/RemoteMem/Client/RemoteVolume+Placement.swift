import LinuxSystem

/// Placing page groups on servers when first written, and publishing the group table.
extension RemoteVolume {
    /// The connections holding `group`'s replicas, healthy ones only, in table order (the
    /// first is where reads go); with `forWriting`, also the replica being filled by a copy.
    /// Nil if the group was never placed and `placing` is false. Throws if the volume is
    /// fenced, the group lives on a server outside this pool, or every replica is down.
    func replicas(ofGroup group: Int, placing: Bool, forWriting: Bool) throws(RemoteMemError) -> ReplicaSet? {
        tableLock.lock()
        if let fencedError {
            tableLock.unlock()
            throw fencedError
        }
        guard table.replica(0, of: group) != nil else {
            tableLock.unlock()
            guard placing else { return nil }
            try place(group)
            return try replicas(ofGroup: group, placing: false, forWriting: forWriting)
        }
        var set = ReplicaSet()
        var placed = 0
        var elsewhere: [UInt8]?
        for r in 0..<table.replicaCount {
            guard let index = table.replica(r, of: group) else { continue }
            placed += 1
            // A replica on a server not connected now (unreachable at start, or not given) is
            // treated as down: the other replicas serve, and re-replication replaces it.
            guard let connection = tableServer[index], !serverDown[connection] else {
                if tableServer[index] == nil { elsewhere = table.serverIDs[index] }
                if forWriting { missedWrites[group] |= 1 << r }
                continue
            }
            set.append(connection)
        }
        if forWriting, let copying, copying.group == group, !serverDown[copying.target] { set.append(copying.target) }
        tableLock.unlock()
        guard set.count > 0 else {
            if elsewhere == GroupTable.lostServerID {
                throw .unreachable(server: "pool", reason: """
                    page group \(group) of volume '\(name)' is lost: its only copy was on a memory server \
                    that came back without it
                    """)
            }
            if let elsewhere {
                throw .unreachable(server: "pool", reason: """
                    page group \(group) of volume '\(name)' has no replica on a healthy server of this pool \
                    (one is on server \(Self.hex(elsewhere)), not connected: pass every --server that holds the volume)
                    """)
            }
            throw .unreachable(server: "pool", reason: "all \(placed) replica(s) of page group \(group) of volume '\(name)' are down")
        }
        return set
    }

    /// Places `group` on `replicaCount` distinct servers, content-aligned: the servers group
    /// number `group` gets in every volume (`chooseServers(count:excluding:group:)`),
    /// so that volumes holding the same image at the same offsets (VMs installed from one
    /// image) put the same content on the same servers, where it is stored once (docs/DEDUP.md,
    /// "Placement"). Publishes the new table on the servers before any page of the group is
    /// written, so an acknowledged write is always reachable through the table. Serialized by
    /// `placementLock` (placements are rare: once per 4 MiB). With fewer healthy servers than
    /// replicas the group starts with fewer (and is topped up by re-replication).
    private func place(_ group: Int) throws(RemoteMemError) {
        placementLock.lock()
        defer { placementLock.unlock() }
        if tableLock.withLock({ table.replica(0, of: group) }) != nil { return }
        let chosen = try chooseServers(count: replicaCount, excluding: [], group: group)
        var next = tableLock.withLock { table }
        next.setReplicas(group: group, to: chosen.map { connections[$0].serverID })
        try publish(next)
        tableLock.withLock { missedWrites[group] = 0 }
        for c in chosen { placedSinceStat[c] += 1 }
    }

    /// Up to `count` healthy servers not in `excluding` (placement lock held). Throws if there
    /// is none.
    ///
    /// Without `group`: most free memory first (estimated from `SERVER_STAT`, minus groups
    /// placed since), ties going to the server holding fewer of this volume's groups. With
    /// `group`: content-aligned. The servers with room for a group, in the order of their ids,
    /// are taken round-robin from position `group % count`: group g of every volume, on every
    /// backend of the pool, gets the same servers (so identical images written at the same
    /// offsets meet on the same servers and are stored once), and one volume's groups spread
    /// evenly. Servers without room come last, by free memory.
    func chooseServers(count: Int, excluding: [Int], group: Int? = nil) throws(RemoteMemError) -> [Int] {
        let now = MonotonicInstant.now
        if now >= statisticsTakenAt.adding(milliseconds: ClientLimits.serverStatMaxAgeMillis) || statistics.contains(where: { $0 == nil }) {
            for (i, connection) in connections.enumerated() {
                statistics[i] = connection.isConnected ? try? Self.serverStatistics(connection) : nil
                placedSinceStat[i] = 0
            }
            statisticsTakenAt = now
        }
        let (groupsHere, down) = tableLock.withLock { () -> ([Int], [Bool]) in
            var counts = [Int](repeating: 0, count: connections.count)
            for (index, count) in table.groupCounts().enumerated() {
                if let c = tableServer[index] { counts[c] += count }
            }
            return (counts, zip(serverDown, serverDraining).map { $0 || $1 })
        }
        var candidates: [(index: Int, freeGroups: UInt64, load: Int)] = []
        for i in connections.indices where !excluding.contains(i) && !down[i] {
            guard let stat = statistics[i], connections[i].isConnected, !stat.isDraining else { continue }
            let placed = UInt64(placedSinceStat[i]) * ClientLimits.groupPages
            let freeGroups = (stat.freeFrames > placed ? stat.freeFrames - placed : 0) / ClientLimits.groupPages
            candidates.append((i, freeGroups, groupsHere[i]))
        }
        candidates.sort { ($0.freeGroups, -$0.load, -$0.index) > ($1.freeGroups, -$1.load, -$1.index) }
        guard !candidates.isEmpty else {
            throw .unreachable(server: connections.map(\.address.description).joined(separator: ","),
                               reason: "no healthy memory server is reachable to place group data")
        }
        guard let group else { return candidates.prefix(count).map(\.index) }
        let withRoom = candidates.filter { $0.freeGroups > 0 }.sorted {
            connections[$0.index].serverID.lexicographicallyPrecedes(connections[$1.index].serverID)
        }
        let start = withRoom.isEmpty ? 0 : group % withRoom.count
        let aligned = withRoom.indices.map { withRoom[(start + $0) % withRoom.count] }
        let fallback = candidates.filter { $0.freeGroups == 0 }
        return (aligned + fallback).prefix(count).map(\.index)
    }

    /// Writes `next` as the new table version on every server (compare-and-swap against each
    /// server's stored version) and adopts it once every healthy server acknowledged.
    func publish(_ next: GroupTable) throws(RemoteMemError) {
        let bytes = next.encoded()
        let versions = tableLock.withLock { metadataVersions }
        let version = versions.max()! + 1
        var tickets = [RequestTicket?](repeating: nil, count: connections.count)
        var firstError: RemoteMemError?
        let down = tableLock.withLock { serverDown }
        var lost = 0
        for (i, connection) in connections.enumerated() where !down[i] {
            let payload = WireMessages.metadataPut(expectedVersion: versions[i], newVersion: version, metadata: bytes)
            let header = FrameHeader(opcode: .metadataPut, requestID: 0, volume: handles[i], epoch: epoch)
            let submitted = payload.withUnsafeBytes { body in
                Result { () throws(RemoteMemError) in try connection.submit(header, payload: body, sendingPages: nil, receivingPages: nil) }
            }
            switch submitted {
            case .success(let ticket): tickets[i] = ticket
            case .failure(let error):
                if error.isRetryable {
                    markDown(i, error)
                    lost += 1
                } else {
                    firstError = firstError ?? error
                }
            }
        }
        var acknowledged = 0
        for (i, ticket) in tickets.enumerated() {
            guard let ticket else { continue }
            do {
                let reply = try connections[i].wait(ticket)
                switch reply.status {
                case .ok:
                    acknowledged += 1
                    tableLock.withLock { metadataVersions[i] = version }
                case .fenced:
                    firstError = noteFenced(connections[i])
                default:
                    firstError = firstError ?? Self.refusal(reply, connections[i], "METADATA_PUT")
                }
            } catch {
                if error.isRetryable {
                    // The server died or stalled: stop using it (its groups get new replicas).
                    markDown(i, error)
                    lost += 1
                } else {
                    firstError = firstError ?? error
                }
            }
        }
        let expected = down.filter { !$0 }.count - lost
        if let fenced = tableLock.withLock({ fencedError }) { throw fenced }
        // Every healthy server must store the table (a server already marked down is skipped:
        // it is not trusted again, and the next open takes the newest version there is).
        guard acknowledged > 0, acknowledged >= expected else {
            throw firstError ?? .unreachable(server: "pool", reason: "group table not acknowledged by every healthy server")
        }
        tableLock.withLock {
            table = next
            tableServer = mapTableServers(next)
        }
    }

    /// Records that `connection` fenced this volume and returns the (sticky) error.
    func noteFenced(_ connection: ServerConnection) -> RemoteMemError {
        tableLock.withLock { () -> RemoteMemError in
            if fencedError == nil {
                fencedError = .fenced(server: connection.address.description, volume: name, epoch: epoch)
            }
            return fencedError!
        }
    }

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
