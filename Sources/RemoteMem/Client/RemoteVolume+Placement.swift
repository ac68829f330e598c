import LinuxSystem

/// Placing page groups on servers when first written, and publishing the group table.
extension RemoteVolume {
    /// The connection index holding `group`; nil if it was never placed and `placing` is false.
    /// Throws if the volume is fenced or the group lives on a server outside this pool.
    func connectionIndex(ofGroup group: Int, placing: Bool) throws(RemoteMemError) -> Int? {
        tableLock.lock()
        if let fencedError {
            tableLock.unlock()
            throw fencedError
        }
        if let index = table.primary(of: group) {
            let connection = tableServer[index]
            let id = table.serverIDs[index]
            tableLock.unlock()
            guard let connection else {
                throw .corruptMetadata("""
                    group \(group) of volume '\(name)' lives on server \(Self.hex(id)), which is not in this pool \
                    (pass every --server that holds the volume)
                    """)
            }
            return connection
        }
        tableLock.unlock()
        return placing ? try place(group) : nil
    }

    /// Places `group` on the server with the most free frames (estimated from `SERVER_STAT`,
    /// minus groups placed since), ties going to the server holding fewer of this volume's
    /// groups; publishes the new table on the servers before any page of the group is written,
    /// so an acknowledged write is always reachable through the table. Serialized by
    /// `placementLock` (placements are rare: once per 4 MiB).
    private func place(_ group: Int) throws(RemoteMemError) -> Int {
        placementLock.lock()
        defer { placementLock.unlock() }
        if let placed = try connectionIndex(ofGroup: group, placing: false) { return placed }
        let chosen = try chooseServer()
        var next = tableLock.withLock { table }
        next.assign(group: group, to: connections[chosen].serverID)
        try publish(next)
        placedSinceStat[chosen] += 1
        return chosen
    }

    private func chooseServer() throws(RemoteMemError) -> Int {
        let now = MonotonicInstant.now
        if now >= statisticsTakenAt.adding(milliseconds: ClientLimits.serverStatMaxAgeMillis) || statistics.contains(where: { $0 == nil }) {
            for (i, connection) in connections.enumerated() {
                statistics[i] = connection.isConnected ? try? Self.serverStatistics(connection) : nil
                placedSinceStat[i] = 0
            }
            statisticsTakenAt = now
        }
        let groupsHere = tableLock.withLock { () -> [Int] in
            var counts = [Int](repeating: 0, count: connections.count)
            for (index, count) in table.groupCounts().enumerated() {
                if let c = tableServer[index] { counts[c] += count }
            }
            return counts
        }
        var best: (index: Int, freeGroups: UInt64, load: Int)?
        for i in connections.indices {
            guard let stat = statistics[i], connections[i].isConnected else { continue }
            let placed = UInt64(placedSinceStat[i]) * ClientLimits.groupPages
            let freeGroups = (stat.freeFrames > placed ? stat.freeFrames - placed : 0) / ClientLimits.groupPages
            if let current = best, (current.freeGroups, -current.load) >= (freeGroups, -groupsHere[i]) { continue }
            best = (i, freeGroups, groupsHere[i])
        }
        guard let best else {
            throw .unreachable(server: connections.map(\.address.description).joined(separator: ","),
                               reason: "no memory server is reachable to place group data")
        }
        return best.index
    }

    /// Writes `next` as the new table version on every server (compare-and-swap against each
    /// server's stored version) and adopts it once a majority acknowledged.
    private func publish(_ next: GroupTable) throws(RemoteMemError) {
        let bytes = next.encoded()
        let versions = tableLock.withLock { metadataVersions }
        let version = versions.max()! + 1
        var tickets = [RequestTicket?](repeating: nil, count: connections.count)
        var firstError: RemoteMemError?
        for (i, connection) in connections.enumerated() {
            let payload = WireMessages.metadataPut(expectedVersion: versions[i], newVersion: version, metadata: bytes)
            let header = FrameHeader(opcode: .metadataPut, requestID: 0, volume: handles[i], epoch: epoch)
            let submitted = payload.withUnsafeBytes { body in
                Result { () throws(RemoteMemError) in try connection.submit(header, payload: body, sendingPages: nil, receivingPages: nil) }
            }
            switch submitted {
            case .success(let ticket): tickets[i] = ticket
            case .failure(let error): firstError = firstError ?? error
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
                firstError = firstError ?? error
            }
        }
        if let fenced = tableLock.withLock({ fencedError }) { throw fenced }
        guard acknowledged >= connections.count / 2 + 1 else {
            throw firstError ?? .unreachable(server: "pool", reason: "group table not acknowledged by a majority")
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
