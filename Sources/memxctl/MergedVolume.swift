import LinuxSystem
import RemoteMem

/// One volume as the pool stores it: what each server holding it reports, merged by name.
struct MergedVolume {
    let name: String
    /// The servers holding the volume, in --server order.
    private(set) var servers: [TCPAddress] = []
    /// The size every server agrees on, or the largest if they disagree (`sizeConsistent`).
    private(set) var sizeBytes: UInt64 = 0
    private(set) var sizeConsistent = true
    /// Pages stored, summed over the servers.
    private(set) var storedPages: UInt64 = 0
    /// The highest lease epoch and metadata version any server reports.
    private(set) var epoch: UInt64 = 0
    private(set) var metadataVersion: UInt64 = 0
    /// De-duplication as the servers report it (`VOLUME_DEDUP_STAT`): whether the volume
    /// de-duplicates (nil: no server said), its pages sharing a frame and its fair share of
    /// memory, summed over the servers.
    private(set) var deduplicates: Bool?
    private(set) var sharedPages: UInt64 = 0
    private(set) var chargedBytes: UInt64 = 0

    init(name: String) { self.name = name }

    var storedBytes: UInt64 { storedPages * UInt64(WireLimits.pageSize) }

    /// Adds what `server` reports.
    mutating func add(_ stat: ControlClient.VolumeStat, on server: TCPAddress) {
        if !servers.isEmpty && stat.sizeBytes != sizeBytes { sizeConsistent = false }
        sizeBytes = servers.isEmpty ? stat.sizeBytes : max(sizeBytes, stat.sizeBytes)
        servers.append(server)
        storedPages += stat.storedPages
        epoch = max(epoch, stat.epoch)
        metadataVersion = max(metadataVersion, stat.metadataVersion)
    }

    /// Adds what a server reports of the volume's sharing (nil: it could not say).
    mutating func add(_ dedup: VolumeDedupStatistics?) {
        guard let dedup else { return }
        deduplicates = dedup.deduplicates
        sharedPages += dedup.sharedPages
        chargedBytes += dedup.chargedBytes
    }

    /// "on", "off" or "-" (unknown: servers without de-duplication).
    var dedupText: String { deduplicates.map { $0 ? "on" : "off" } ?? "-" }

    var json: JSONValue {
        .object([
            ("name", .string(name)),
            ("sizeBytes", .unsigned(sizeBytes)),
            ("sizeConsistent", .bool(sizeConsistent)),
            ("storedPages", .unsigned(storedPages)),
            ("storedBytes", .unsigned(storedBytes)),
            ("servers", .array(servers.map { .string($0.description) })),
            ("epoch", .unsigned(epoch)),
            ("metadataVersion", .unsigned(metadataVersion)),
            ("dedup", deduplicates.map { .bool($0) } ?? .null),
            ("sharedPages", .unsigned(sharedPages)),
            ("chargedBytes", .unsigned(chargedBytes)),
        ])
    }
}
