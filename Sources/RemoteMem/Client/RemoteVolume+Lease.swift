import LinuxSystem

/// Opening a volume under a lease: epoch agreement across the pool (MEMX.md §5).
extension RemoteVolume {
    /// What `VOLUME_OPEN` on every server returned once all of them hold the same epoch.
    struct OpenedVolume {
        var epoch: UInt64
        var handles: [UInt32]
        var replies: [VolumeOpenReply]
    }

    /// Opens the volume on every server with minimum epoch 0, then re-opens every server that
    /// answered with a lower epoch than the highest one, at that epoch, until all agree (each
    /// open stores max(stored + 1, minimum), so one extra round normally suffices; another
    /// backend opening at the same time can force more, up to `epochAgreementRoundsMax`).
    static func agreeOnEpoch(name: String, connections: [ServerConnection]) throws(RemoteMemError) -> OpenedVolume {
        var handles = [UInt32](repeating: 0, count: connections.count)
        var epochs = [UInt64](repeating: 0, count: connections.count)
        var replies = [VolumeOpenReply?](repeating: nil, count: connections.count)
        func open(_ i: Int, minimum: UInt64) throws(RemoteMemError) {
            let connection = connections[i]
            let reply = try connection.call(.volumeOpen, payload: WireMessages.volumeOpen(name: name, minimumEpoch: minimum))
            guard reply.status == .ok else {
                if reply.status == .notFound {
                    throw .refused(server: connection.address.description, operation: "VOLUME_OPEN of '\(name)' (no such volume)",
                                   status: .notFound)
                }
                throw refusal(reply, connection, "VOLUME_OPEN")
            }
            do {
                replies[i] = try VolumeOpenReply(reply.payload)
            } catch {
                throw .protocolViolation(server: connection.address.description, reason: "VOLUME_OPEN reply: \(error)")
            }
            handles[i] = reply.header.volume
            epochs[i] = reply.header.epoch
        }
        for i in connections.indices { try open(i, minimum: 0) }
        for _ in 0..<ClientLimits.epochAgreementRoundsMax {
            let target = epochs.max()!
            let behind = connections.indices.filter { epochs[$0] < target }
            if behind.isEmpty {
                return OpenedVolume(epoch: target, handles: handles, replies: replies.map { $0! })
            }
            for i in behind { try open(i, minimum: target) }
        }
        throw .refused(server: connections.map(\.address.description).joined(separator: ","),
                       operation: "VOLUME_OPEN of '\(name)' (no epoch agreement: another backend keeps opening it)",
                       status: .conflict)
    }

    /// Writes the newest group table to servers whose stored copy is older (a table write that
    /// reached only a majority earlier). Best effort: a failure here leaves the server behind
    /// until the next table write, which sends it the whole table anyway.
    func catchUpLaggingTables(newestVersion: UInt64) {
        guard newestVersion > 0 else { return }
        let bytes = tableLock.withLock { table.encoded() }
        for (i, connection) in connections.enumerated() {
            let stored = tableLock.withLock { metadataVersions[i] }
            guard stored < newestVersion else { continue }
            let payload = WireMessages.metadataPut(expectedVersion: stored, newVersion: newestVersion, metadata: bytes)
            if let reply = try? connection.call(.metadataPut, volume: handles[i], epoch: epoch, payload: payload),
               reply.status == .ok {
                tableLock.withLock { metadataVersions[i] = newestVersion }
            }
        }
    }
}

/// The hot-page list a migration source leaves for its destination (`HOT_PAGES_PUT/GET`).
extension RemoteVolume {
    /// Stores `list` with the volume on every healthy server (best effort: it is a hint).
    /// Returns how many servers took it.
    @discardableResult
    public func putHotPages(_ list: HotPageList) -> Int {
        let payload = list.encoded()
        var stored = 0
        for slot in connections.indices where !tableLock.withLock({ serverDown[slot] }) {
            var writer = PayloadWriter()
            writer.blob(payload)
            if let reply = try? connections[slot].call(.hotPagesPut, volume: handles[slot], epoch: epoch, payload: writer.bytes),
               reply.status == .ok {
                stored += 1
            }
        }
        return stored
    }

    /// The hot-page list the previous lease holder left, from the first healthy server that
    /// has a valid one (nil: none).
    public func hotPages() -> HotPageList? {
        for slot in connections.indices where !tableLock.withLock({ serverDown[slot] }) {
            guard let reply = try? connections[slot].call(.hotPagesGet, volume: handles[slot], epoch: epoch),
                  reply.status == .ok else { continue }
            var reader = PayloadReader(reply.payload)
            guard let bytes = try? reader.blob(limit: WireLimits.hotPagesBytesMax), !bytes.isEmpty,
                  let list = try? HotPageList(decoding: bytes, pageCount: pageCount) else { continue }
            return list
        }
        return nil
    }
}
