import Glibc
import LinuxSystem

/// The connections holding one group's replicas: up to 4 plus a replica being filled. Inline
/// storage, so looking them up on the data path allocates nothing.
struct ReplicaSet {
    static let capacity = 5
    private(set) var count = 0
    private var storage: (Int, Int, Int, Int, Int) = (-1, -1, -1, -1, -1)

    mutating func append(_ connection: Int) {
        precondition(count < Self.capacity)
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: connection, toByteOffset: count * MemoryLayout<Int>.stride, as: Int.self) }
        count += 1
    }

    subscript(_ i: Int) -> Int {
        precondition(i < count)
        return withUnsafeBytes(of: storage) { $0.load(fromByteOffset: i * MemoryLayout<Int>.stride, as: Int.self) }
    }

    func contains(_ connection: Int) -> Bool {
        for i in 0..<count where self[i] == connection { return true }
        return false
    }
}

/// What re-replication has done (for logs, tests and benchmarks).
public struct RepairStatistics: Sendable, Equatable {
    /// Groups copied to a new replica.
    public var groupsRepaired = 0
    /// Bytes of non-zero pages copied.
    public var bytesCopied: UInt64 = 0
    /// Groups with fewer replicas than the volume keeps and no healthy server to copy to.
    public var groupsUnderReplicated = 0
    /// Groups whose every replica is down: their data is unreachable.
    public var groupsLost = 0
    /// Servers taken back after a failure (`RemoteVolume+Admission.swift`).
    public var serversReadmitted = 0
}

/// Failure handling: a server whose requests fail with connection errors or time out is marked
/// down and no longer used by this backend; reads fail over to another replica at once, writes
/// are acknowledged by the replicas still healthy, and a background thread copies every group
/// that lost a replica to another healthy server, then publishes the new group table.
extension RemoteVolume {
    /// Stops using slot `connection` for good (idempotent): retires its connection (so no
    /// request planned earlier reaches the server through it), logs why and wakes
    /// re-replication. The heartbeat re-admits the server in a new slot once it answers.
    func markDown(_ connection: Int, _ error: RemoteMemError) {
        let first = tableLock.withLock { () -> Bool in
            guard !serverDown[connection] else { return false }
            serverDown[connection] = true
            repairWake.broadcast()
            return true
        }
        if first {
            connections[connection].retire("stopped using this server after: \(error)")
            report(VolumeEvent(kind: .problem, message: "memory server \(connections[connection].address) is down (\(error)); serving its page groups from the other replicas and copying them elsewhere"))
        }
    }

    /// Records that the replica of `group` on slot `slot` missed a write or trim (its server
    /// failed it): that copy is stale if the server comes back.
    func noteMissedWrite(group: Int, slot: Int) {
        tableLock.withLock {
            for r in 0..<table.replicaCount {
                if let index = table.replica(r, of: group), tableServer[index] == slot { missedWrites[group] |= 1 << r }
            }
        }
    }

    /// True if `error` means the server, not the request, is at fault: the request may succeed
    /// on another replica.
    static func isServerFailure(_ error: RemoteMemError) -> Bool {
        switch error {
        case .unreachable, .timedOut, .connectionLost, .protocolViolation: true
        default: false
        }
    }

    /// A snapshot of re-replication's counters.
    public var repairProgress: RepairStatistics { tableLock.withLock { repairStatistics } }

    /// Pool servers (by `pool` index) this backend has a healthy connection to.
    public var upServers: [Int] {
        tableLock.withLock { pool.indices.filter { liveSlotLocked(of: $0) != nil } }
    }

    /// Pool servers (by `pool` index) this backend does not use now: marked down, or
    /// unreachable since `open`, and not re-admitted yet.
    public var downServers: [Int] {
        tableLock.withLock { pool.indices.filter { liveSlotLocked(of: $0) == nil } }
    }

    /// The slot of pool server `index` that is up, if any (tableLock held).
    func liveSlotLocked(of index: Int) -> Int? {
        serverDown.indices.last { !serverDown[$0] && connections[$0].address == pool[index] }
    }

    func startRepair() throws(RemoteMemError) {
        guard replicaCount > 1 || pool.count > 1 else { return }
        do {
            let thread = try OSThread(name: "memx-repair") { [self] in runRepair() }
            tableLock.withLock { repairThread = thread }
        } catch {
            throw .invalidArgument("cannot start the re-replication thread: \(error)")
        }
    }

    func stopRepair() {
        let thread = tableLock.withLock { () -> OSThread? in
            closing = true
            repairWake.broadcast()
            defer { repairThread = nil }
            return repairThread
        }
        thread?.join()
    }

    /// The re-replication thread: sleeps until a server goes down, then repairs degraded groups
    /// one at a time until none is left that can be repaired.
    private func runRepair() {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: Int(WireLimits.pagesPerRequestMax) * WireLimits.pageSize, alignment: 4096)
        defer { buffer.deallocate() }
        var reportedStuck = Set<Int>()
        var stuckReported = 0
        var failures = 0
        var polled = MonotonicInstant(nanoseconds: 0)
        tableLock.lock()
        while !closing {
            if MonotonicInstant.now >= polled.adding(milliseconds: ClientLimits.drainPollMillis) {
                tableLock.unlock()
                pollDraining()
                if admitReturningServers() {
                    // Groups stuck for want of a spare server may have one now.
                    reportedStuck.removeAll()
                    stuckReported = 0
                    tableLock.withLock { repairStatistics.groupsUnderReplicated = 0 }
                }
                polled = MonotonicInstant.now
                tableLock.lock()
            }
            guard serverDown.contains(true) || serverDraining.contains(true) || tableServer.contains(nil),
                  let (group, stuck) = nextDegradedGroupLocked(skipping: reportedStuck) else {
                if reportedStuck.count > stuckReported {
                    // One line per episode, not one per group.
                    stuckReported = reportedStuck.count
                    tableLock.unlock()
                    report(VolumeEvent(kind: .problem, message: """
                        \(stuckReported) page group(s) keep fewer than \(replicaCount) replicas: \
                        no other healthy memory server to copy them to
                        """))
                    tableLock.lock()
                }
                repairWake.wait(tableLock, until: MonotonicInstant.now.adding(milliseconds: 1000))
                continue
            }
            if stuck {
                reportedStuck.insert(group)
                repairStatistics.groupsUnderReplicated = reportedStuck.count
                continue
            }
            tableLock.unlock()
            let started = MonotonicInstant.now
            let result = Result { () throws(RemoteMemError) -> (Int, UInt64) in try repair(group, buffer: buffer) }
            tableLock.lock()
            switch result {
            case .success(let (target, bytes)):
                failures = 0
                repairStatistics.groupsRepaired += 1
                repairStatistics.bytesCopied += bytes
                let statistics = repairStatistics
                let remaining = degradedGroupCountLocked()
                tableLock.unlock()
                let millis = started.millisecondsElapsed
                report(VolumeEvent(kind: .progress, message: """
                    re-replicated page group \(group) to \(connections[target].address) (\(bytes >> 10) KiB in \(millis) ms); \
                    \(statistics.groupsRepaired) group(s), \(statistics.bytesCopied >> 20) MiB copied so far, \(remaining) to go
                    """))
                tableLock.lock()
            case .failure(let error):
                if case .fenced = error { closing = true }
                failures += 1
                // Back off (a full pool, say, will not free memory by itself): 0.1 s doubling to
                // 30 s, reset by the next success.
                let pause = min(ClientLimits.reconnectBackoffMillisMin << min(failures - 1, 9), 30_000)
                tableLock.unlock()
                report(VolumeEvent(kind: .problem, message: "re-replicating page group \(group) failed: \(error); retrying in \(pause) ms"))
                tableLock.lock()
                if !closing { repairWake.wait(tableLock, until: MonotonicInstant.now.adding(milliseconds: pause)) }
            }
        }
        tableLock.unlock()
    }

    /// Asks every healthy server whether it is draining (`SERVER_STAT`); a change is logged.
    /// This is also the heartbeat: a server that fails it (connection down, no answer within
    /// the request timeout) is marked down even if no I/O went its way, so its groups are
    /// copied before they are needed.
    private func pollDraining() {
        for (i, connection) in connections.enumerated() where !tableLock.withLock({ serverDown[i] }) {
            let statistics: ServerStatistics
            do {
                statistics = try Self.serverStatistics(connection)
            } catch {
                if Self.isServerFailure(error) { markDown(i, error) }
                continue
            }
            let changed = tableLock.withLock { () -> Bool in
                defer { serverDraining[i] = statistics.isDraining }
                return serverDraining[i] != statistics.isDraining
            }
            if changed {
                report(VolumeEvent(kind: .problem, message: statistics.isDraining
                    ? "memory server \(connection.address) is draining: moving its page groups to the other servers"
                    : "memory server \(connection.address) stopped draining"))
            }
        }
    }

    /// The connections holding one group's replicas, in table order.
    struct Holders {
        /// On servers that are up and staying.
        var healthy: [Int]
        /// Also those on a draining server: a source for a copy, not a keeper. Staying first.
        var readable: [Int]
        /// Every connected holder, down or not.
        var all: [Int]

        /// Fewer staying copies than the volume keeps, or a copy on a draining server.
        func needCopy(replicaCount: Int) -> Bool {
            healthy.count < replicaCount || readable.count > healthy.count
        }
    }

    /// Who holds `group` (tableLock held).
    private func holdersLocked(_ group: Int) -> Holders {
        var healthy: [Int] = []
        var readable: [Int] = []
        var all: [Int] = []
        for r in 0..<table.replicaCount {
            guard let index = table.replica(r, of: group), let connection = tableServer[index] else { continue }
            all.append(connection)
            guard !serverDown[connection] else { continue }
            readable.append(connection)
            if !serverDraining[connection] { healthy.append(connection) }
        }
        // Copy from a staying replica first.
        readable.sort { !serverDraining[$0] && serverDraining[$1] }
        return Holders(healthy: healthy, readable: readable, all: all)
    }

    /// The next placed group with fewer healthy replicas than the volume keeps (tableLock held);
    /// `stuck` if no healthy server could take another copy.
    private func nextDegradedGroupLocked(skipping: Set<Int>) -> (Int, stuck: Bool)? {
        for group in 0..<table.groupCount where table.replica(0, of: group) != nil && !skipping.contains(group) {
            let holders = holdersLocked(group)
            guard holders.needCopy(replicaCount: replicaCount) else { continue }
            if holders.readable.isEmpty {
                lostGroups.insert(group)
                repairStatistics.groupsLost = lostGroups.count
                continue
            }
            let spare = connections.indices.contains { !serverDown[$0] && !serverDraining[$0] && !holders.all.contains($0) }
            return (group, !spare)
        }
        return nil
    }

    private func degradedGroupCountLocked() -> Int {
        var count = 0
        for group in 0..<table.groupCount where table.replica(0, of: group) != nil {
            if holdersLocked(group).needCopy(replicaCount: replicaCount) { count += 1 }
        }
        return count
    }

    /// Copies `group` from a healthy replica to a new server and publishes the table that names
    /// it. Returns the new replica's connection and the bytes copied.
    private func repair(_ group: Int, buffer: UnsafeMutableRawPointer) throws(RemoteMemError) -> (Int, UInt64) {
        let holders = tableLock.withLock { holdersLocked(group) }
        let target = try placementLock.withLock { () throws(RemoteMemError) -> Int in
            try chooseServers(count: 1, excluding: holders.all)[0]
        }
        // From here every write to the group also goes to the target; none is in flight (they
        // hold the copy lock shared).
        copyLock.lockExclusive()
        tableLock.withLock { copying = (group, target) }
        copyLock.unlock()
        defer { tableLock.withLock { copying = nil } }
        let firstPage = UInt64(group) * ClientLimits.groupPages
        let groupEnd = min(firstPage + ClientLimits.groupPages, pageCount)
        // The target may hold stale pages of this group from an earlier placement: clear them.
        try request(.trim, connection: target, page: firstPage, count: groupEnd - firstPage, pages: nil)
        var copied: UInt64 = 0
        let chunk = UInt64(WireLimits.pagesPerRequestMax)
        var page = firstPage
        while page < groupEnd {
            let n = min(chunk, groupEnd - page)
            copyLock.lockExclusive()
            let result = Result { () throws(RemoteMemError) -> UInt64 in try copyChunk(group, page: page, count: n, to: target, buffer: buffer) }
            copyLock.unlock()
            copied += try result.get()
            page += n
        }
        // Adopt the target: the healthy replicas (now, after the copy) plus the target. Lock
        // order: copy lock, placement lock, table lock (a write holds the copy lock shared
        // when it places a group).
        do {
            copyLock.lockExclusive()
            defer { copyLock.unlock() }
            try placementLock.withLock { () throws(RemoteMemError) in
                var next = tableLock.withLock { table }
                let healthy = tableLock.withLock { holdersLocked(group).healthy }
                let ids = (healthy + [target]).prefix(replicaCount).map { connections[$0].serverID }
                next.setReplicas(group: group, to: Array(ids))
                try publish(next)
                tableLock.withLock { missedWrites[group] = 0 }
            }
        }
        // A draining server's copy is not named any more: give its memory back.
        for connection in holders.all where tableLock.withLock({ serverDraining[connection] && !serverDown[connection] }) {
            try? request(.trim, connection: connection, page: firstPage, count: groupEnd - firstPage, pages: nil)
        }
        return (target, copied)
    }

    /// Reads `count` pages from a healthy replica into `buffer` and writes the non-zero ones to
    /// `target` (copy lock held exclusively). Returns the bytes written.
    private func copyChunk(_ group: Int, page: UInt64, count: UInt64, to target: Int,
                           buffer: UnsafeMutableRawPointer) throws(RemoteMemError) -> UInt64 {
        var source: Int?
        while true {
            let readable = tableLock.withLock { holdersLocked(group).readable }
            guard let candidate = readable.first else {
                throw .unreachable(server: "pool", reason: "every replica of page group \(group) is down")
            }
            do {
                try request(.read, connection: candidate, page: page, count: count, pages: buffer)
                source = candidate
                break
            } catch {
                guard Self.isServerFailure(error) else { throw error }
                markDown(candidate, error)
            }
        }
        _ = source
        var written: UInt64 = 0
        var i: UInt64 = 0
        while i < count {
            // Runs of pages that are not all zeros (a zero page reads as zeros anyway).
            guard !Self.isZero(buffer + Int(i) * WireLimits.pageSize) else {
                i += 1
                continue
            }
            var end = i + 1
            while end < count && !Self.isZero(buffer + Int(end) * WireLimits.pageSize) { end += 1 }
            do {
                try request(.write, connection: target, page: page + i, count: end - i,
                            pages: buffer + Int(i) * WireLimits.pageSize)
            } catch {
                if Self.isServerFailure(error) { markDown(target, error) }
                throw error
            }
            written += (end - i) * UInt64(WireLimits.pageSize)
            i = end
        }
        return written
    }

    /// One READ, WRITE or TRIM of `count` pages at `page` on `connection`, waited for; `pages`
    /// is `count` consecutive 4 KiB pages (READ destination, WRITE source).
    func request(_ opcode: Opcode, connection: Int, page: UInt64, count: UInt64,
                         pages: UnsafeMutableRawPointer?) throws(RemoteMemError) {
        var header = FrameHeader(opcode: opcode, requestID: 0, pageCount: UInt32(count), epoch: epoch, page: page)
        header.volume = handles[connection]
        let ticket = try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer.self, capacity: Int(max(count, 1))) {
            (pointers) throws(RemoteMemError) -> RequestTicket in
            if let pages { for i in 0..<Int(count) { pointers[i] = pages + i * WireLimits.pageSize } }
            let list = UnsafeBufferPointer(rebasing: pointers[..<Int(count)])
            return try connections[connection].submit(header, sendingPages: opcode == .write ? list : nil,
                                                      receivingPages: opcode == .read ? list : nil)
        }
        let reply = try connections[connection].wait(ticket)
        switch reply.status {
        case .ok: return
        case .fenced: throw noteFenced(connections[connection])
        default: throw Self.refusal(reply, connections[connection], "\(opcode)")
        }
    }

    static func isZero(_ page: UnsafeMutableRawPointer) -> Bool {
        let words = page.assumingMemoryBound(to: UInt64.self)
        for i in 0..<(WireLimits.pageSize / 8) where words[i] != 0 { return false }
        return true
    }
}
