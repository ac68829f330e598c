/// A volume's placement: for each page group (`ClientLimits.groupPages` pages, 4 MiB), the
/// servers holding it, stored as the volume's metadata on every server (`METADATA_PUT`) so any
/// backend that opens the volume by name finds the same placement.
///
/// Servers are named by their 16-byte HELLO id, not by their position on a command line, so a
/// backend given the servers in another order (or another address for the same server) still
/// finds each group. Each group has `replicaCount` one-byte entries, indices into `serverIDs`;
/// `unassigned` marks a group never written (it reads as zeros without a round trip).
///
/// Encoding (little-endian): magic u32 `"MXGT"`, format u16, replicas u16, group pages u32,
/// group count u32, server count u16, reserved u16, server ids (16 bytes each), then the
/// entries, group-major. A 1 TiB volume at 2 replicas is 512 KiB, under
/// `WireLimits.metadataBytesMax`.
public struct GroupTable: Equatable, Sendable {
    public static let magic: UInt32 = 0x5447_584D  // "MXGT"
    public static let formatVersion: UInt16 = 1
    /// The entry of a replica that is not placed.
    public static let unassigned: UInt8 = 0xFF
    /// The server id standing for a copy that is gone: a group whose only copy was on a server
    /// that came back without it. No server has this id, so the group's reads and writes fail
    /// (an I/O error to the guest), never read as zeros.
    public static let lostServerID = [UInt8](repeating: 0xFF, count: 16)
    static let headerBytes = 20

    public private(set) var groupPages: UInt64
    public private(set) var groupCount: Int
    public private(set) var replicaCount: Int
    /// Server ids; entries index this list.
    public private(set) var serverIDs: [[UInt8]]
    private var entries: [UInt8]

    /// An empty table: every group unassigned.
    public init(groupCount: Int, groupPages: UInt64 = ClientLimits.groupPages,
                replicaCount: Int = ClientLimits.replicasPerGroup) {
        self.groupPages = groupPages
        self.groupCount = groupCount
        self.replicaCount = replicaCount
        serverIDs = []
        entries = [UInt8](repeating: Self.unassigned, count: groupCount * replicaCount)
    }

    /// The groups of a volume of `pageCount` pages.
    public static func groupCount(pageCount: UInt64, groupPages: UInt64 = ClientLimits.groupPages) -> Int {
        Int((pageCount + groupPages - 1) / groupPages)
    }

    /// The largest table that fits in one `METADATA_PUT`, so the largest volume MemX can place.
    public static func fits(groupCount: Int, replicaCount: Int = ClientLimits.replicasPerGroup) -> Bool {
        headerBytes + ClientLimits.serversMax * WireMessages.nonceBytes + groupCount * replicaCount
            <= WireLimits.metadataBytesMax
    }

    /// The table server index of the first replica of `group`, or nil if unassigned.
    public func primary(of group: Int) -> Int? {
        let entry = entries[group * replicaCount]
        return entry == Self.unassigned ? nil : Int(entry)
    }

    /// The table server index of replica `r` of `group`, or nil if unassigned.
    @inline(__always)
    public func replica(_ r: Int, of group: Int) -> Int? {
        let entry = entries[group * replicaCount + r]
        return entry == Self.unassigned ? nil : Int(entry)
    }

    /// The table server indices of every placed replica of `group`.
    public func replicas(of group: Int) -> [Int] {
        (0..<replicaCount).compactMap { r in
            let entry = entries[group * replicaCount + r]
            return entry == Self.unassigned ? nil : Int(entry)
        }
    }

    /// Groups placed on each table server index.
    public func groupCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: serverIDs.count)
        for entry in entries where entry != Self.unassigned { counts[Int(entry)] += 1 }
        return counts
    }

    /// Places the first replica of `group` on the server with id `serverID`, adding it to the
    /// server list if new.
    public mutating func assign(group: Int, to serverID: [UInt8]) {
        entries[group * replicaCount] = UInt8(index(of: serverID))
    }

    /// Sets every replica of `group` to the servers with ids `replicaIDs` (at most
    /// `replicaCount`; the rest unassigned), adding new ids to the server list. Traps if the list
    /// is full (the caller checked the pool size).
    public mutating func setReplicas(group: Int, to replicaIDs: [[UInt8]]) {
        precondition(replicaIDs.count <= replicaCount, "more replicas than the table holds")
        for r in 0..<replicaCount {
            guard r < replicaIDs.count else {
                entries[group * replicaCount + r] = Self.unassigned
                continue
            }
            entries[group * replicaCount + r] = UInt8(index(of: replicaIDs[r]))
        }
    }

    /// The server-list index of `serverID`, adding it if new. A full list (servers that
    /// restarted with new ids add entries) reuses the index of an id no group names any more.
    /// Traps if every index is named (more servers than a pool may have).
    private mutating func index(of serverID: [UInt8]) -> Int {
        if let known = serverIDs.firstIndex(of: serverID) { return known }
        if serverIDs.count < ClientLimits.serversMax {
            serverIDs.append(serverID)
            return serverIDs.count - 1
        }
        let counts = groupCounts()
        guard let unused = counts.firstIndex(of: 0) else {
            preconditionFailure("group table server list is full: \(serverIDs.count) servers each hold a group")
        }
        serverIDs[unused] = serverID
        return unused
    }

    /// The encoded table.
    public func encoded() -> [UInt8] {
        var writer = PayloadWriter()
        writer.u32(Self.magic)
        writer.u16(Self.formatVersion)
        writer.u16(UInt16(replicaCount))
        writer.u32(UInt32(groupPages))
        writer.u32(UInt32(groupCount))
        writer.u16(UInt16(serverIDs.count))
        writer.u16(0)
        for id in serverIDs { writer.raw(id) }
        writer.raw(entries)
        return writer.bytes
    }

    /// Decodes a table; every index is checked against the server list.
    public init(decoding bytes: [UInt8]) throws(RemoteMemError) {
        do {
            var reader = PayloadReader(bytes)
            guard try reader.u32() == Self.magic else { throw RemoteMemError.corruptMetadata("group table: bad magic") }
            let format = try reader.u16()
            guard format == Self.formatVersion else {
                throw RemoteMemError.corruptMetadata("group table format \(format), this client reads \(Self.formatVersion)")
            }
            replicaCount = Int(try reader.u16())
            groupPages = UInt64(try reader.u32())
            groupCount = Int(try reader.u32())
            let serverCount = Int(try reader.u16())
            _ = try reader.u16()
            guard (1...4).contains(replicaCount), groupPages > 0, serverCount <= ClientLimits.serversMax else {
                throw RemoteMemError.corruptMetadata("group table: replicas \(replicaCount), group pages \(groupPages), servers \(serverCount)")
            }
            serverIDs = []
            for _ in 0..<serverCount { serverIDs.append(try reader.raw(WireMessages.nonceBytes)) }
            entries = try reader.raw(groupCount * replicaCount)
            try reader.finish()
        } catch let error as RemoteMemError {
            throw error
        } catch {
            throw .corruptMetadata("group table: \(error)")
        }
        for entry in entries where entry != Self.unassigned && Int(entry) >= serverIDs.count {
            throw .corruptMetadata("group table: entry \(entry) names no server (\(serverIDs.count) known)")
        }
    }
}
