import LinuxSystem

/// Re-admission: a pool server this backend has no healthy connection to (it failed, or was
/// unreachable at `open`) is tried again by the heartbeat, once a second. When it answers, it
/// gets a fresh connection in a new slot (`ConnectionSlots`) and is trusted only with what it
/// cannot have missed:
///
/// - A server that restarted (new server id) holds nothing of the volume: it joins empty, and
///   re-replication fills it like any spare server.
/// - A server with the same id (it stalled, or its link was cut) keeps a group only if its copy
///   missed no acknowledged write or trim (`missedWrites`); its other groups are dropped from
///   the table, then trimmed on it, and copied to it again if it is the best target.
/// - A server that lost the volume (its record is gone) keeps nothing; a group whose only copy
///   was there is marked lost (`GroupTable.lostServerID`): an I/O error, never zeros.
/// - A server whose copy of the volume has a newer lease epoch means another backend took the
///   volume: this one is fenced, as on any FENCED reply.
///
/// What a server missed before this backend opened the volume is not known: a server absent
/// at `open` keeps the groups it missed nothing of since then.
extension RemoteVolume {
    /// What re-admitting one server did.
    struct Admission {
        var slot: Int
        var kept = 0
        /// Groups whose copy on the server was stale: no longer named, to be trimmed there.
        var dropped: [Int] = []
        var lost = 0
    }

    /// Tries every pool server without a healthy slot (repair thread, no lock held). Returns
    /// true if one was re-admitted.
    func admitReturningServers() -> Bool {
        var admitted = false
        let absent = tableLock.withLock { () -> [Int] in
            guard fencedError == nil, !closing else { return [] }
            return pool.indices.filter { liveSlotLocked(of: $0) == nil }
        }
        for index in absent where MonotonicInstant.now >= admissionNotBefore[index] {
            let started = MonotonicInstant.now
            guard let connection = try? ServerConnection(address: pool[index], options: connectionOptions) else {
                // Still down (said when it was marked down). An attempt that took long (no
                // answer until the connect timeout) is not repeated soon: it holds up repairs.
                admissionNotBefore[index] = MonotonicInstant.now.adding(milliseconds: Int(started.millisecondsElapsed) * 4)
                continue
            }
            let admission: Admission
            do {
                admission = try admit(connection)
            } catch {
                connection.close()
                if admissionFailure[index] != error.description {
                    admissionFailure[index] = error.description
                    report(VolumeEvent(kind: .problem, message: "memory server \(pool[index]) answers again but cannot be re-admitted: \(error)"))
                }
                continue
            }
            admissionFailure[index] = nil
            // The stale copies take memory for nothing; a failure here only leaves them.
            for group in admission.dropped {
                let first = UInt64(group) * ClientLimits.groupPages
                try? request(.trim, connection: admission.slot, page: first, count: min(ClientLimits.groupPages, pageCount - first), pages: nil)
            }
            report(VolumeEvent(kind: .progress, message: """
                memory server \(pool[index]) answers again (server id \(Self.hex(connection.serverID))): re-admitted; \
                it keeps \(admission.kept) page group(s) it missed nothing of; \(admission.dropped.count) stale one(s) \
                dropped\(admission.lost > 0 ? ", \(admission.lost) lost (it held their only copy)" : "")
                """))
            admitted = true
        }
        return admitted
    }

    /// Opens the volume on `connection`'s server under this backend's lease, drops the groups
    /// its copy may be stale for, and gives it a slot. Writes wait meanwhile (copy lock), so
    /// none can be missed between the decision and the slot going live.
    private func admit(_ connection: ServerConnection) throws(RemoteMemError) -> Admission {
        let (handle, storedVersion, wiped) = try openForAdmission(connection)
        copyLock.lockExclusive()
        defer { copyLock.unlock() }
        placementLock.lock()
        defer { placementLock.unlock() }
        guard connections.count < connections.capacity else {
            throw .invalidArgument("all \(connections.capacity) connection slots are used: restart memx-vhost to re-admit more servers")
        }
        var admission = Admission(slot: connections.count)
        var next = tableLock.withLock { table }
        var missed = tableLock.withLock { missedWrites }
        for group in 0..<next.groupCount {
            var ids: [[UInt8]] = []
            var bits: UInt8 = 0
            var held = false
            var stale = false
            for r in 0..<next.replicaCount {
                guard let index = next.replica(r, of: group) else { continue }
                let id = next.serverIDs[index]
                if id == connection.serverID {
                    held = true
                    if wiped || missed[group] & (1 << r) != 0 {
                        stale = true
                        continue
                    }
                }
                if missed[group] & (1 << r) != 0 { bits |= 1 << ids.count }
                ids.append(id)
            }
            guard held else { continue }
            guard stale else {
                admission.kept += 1
                continue
            }
            admission.dropped.append(group)
            if ids.isEmpty {
                ids = [GroupTable.lostServerID]
                admission.lost += 1
            }
            next.setReplicas(group: group, to: ids)
            missed[group] = bits
        }
        if !admission.dropped.isEmpty {
            try publish(next)
            tableLock.withLock { missedWrites = missed }
        }
        // The server gets the current table too (a later open may read it from there).
        let (bytes, version) = tableLock.withLock { (table.encoded(), metadataVersions.max()!) }
        if storedVersion < version {
            let payload = WireMessages.metadataPut(expectedVersion: storedVersion, newVersion: version, metadata: bytes)
            let reply = try connection.call(.metadataPut, volume: handle, epoch: epoch, payload: payload)
            guard reply.status == .ok else {
                if reply.status == .fenced { throw noteFenced(connection) }
                throw Self.refusal(reply, connection, "METADATA_PUT")
            }
        }
        statistics.append(nil)
        placedSinceStat.append(0)
        tableLock.withLock {
            serverDown.append(false)
            serverDraining.append(false)
            metadataVersions.append(max(storedVersion, version))
            connections.append(connection, handle: handle)
            tableServer = mapTableServers(table)
            lostGroups.removeAll()
            repairStatistics.groupsLost = 0
            repairStatistics.serversReadmitted += 1
        }
        return admission
    }

    /// The volume on a returning server, at this backend's epoch: its handle, its stored table
    /// version, and whether its copy is gone (the volume had to be created again).
    private func openForAdmission(_ connection: ServerConnection) throws(RemoteMemError) -> (UInt32, UInt64, wiped: Bool) {
        let server = connection.address.description
        let wiped: Bool
        if let stat = try Self.volumeStatistics(name: name, on: connection) {
            wiped = false
            guard stat.sizeBytes == capacityBytes else {
                throw .geometryMismatch("volume '\(name)' on \(server) has \(stat.sizeBytes) bytes, not \(capacityBytes)")
            }
            if stat.epoch > epoch { throw noteFenced(connection) }
            if stat.epoch == epoch {
                // Still open under our lease (the server never restarted): the handle is the one
                // its earlier slot used; opening again would raise the epoch and fence us there.
                let earlier = tableLock.withLock { serverDown.indices.last { connections[$0].serverID == connection.serverID } }
                guard let earlier else {
                    throw .refused(server: server, operation: "re-admission (volume '\(name)' already at this backend's epoch \(epoch))",
                                   status: .conflict)
                }
                return (handles[earlier], stat.metadataVersion, false)
            }
        } else {
            wiped = true
            try Self.create(name: name, capacityBytes: capacityBytes, on: [connection])
        }
        let reply = try connection.call(.volumeOpen, payload: WireMessages.volumeOpen(name: name, minimumEpoch: epoch))
        guard reply.status == .ok else { throw Self.refusal(reply, connection, "VOLUME_OPEN") }
        guard reply.header.epoch == epoch else { throw noteFenced(connection) }
        do {
            return (reply.header.volume, try VolumeOpenReply(reply.payload).metadataVersion, wiped)
        } catch {
            throw .protocolViolation(server: server, reason: "VOLUME_OPEN reply: \(error)")
        }
    }
}
