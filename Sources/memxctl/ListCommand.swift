import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl list`: the volumes of every server, merged by name.
struct ListCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the volumes on the servers, merged by name.",
        discussion: """
            A volume is stored on several servers; each row is one volume: its size, the pages \
            (and bytes) stored summed over the servers, the servers holding it, its lease epoch \
            and metadata version (the highest any server reports). A size marked '!' differs \
            between servers (see memxctl stat NAME). Unreachable servers are named below the \
            table; the exit status is still 0 (but 1 if a server's cluster-key handshake \
            failed: see --key-file).
            """)

    @OptionGroup var global: GlobalOptions

    func validate() throws { try global.requireServers() }

    func run() throws {
        let servers = global.servers
        let results = Fanout.run(servers, try global.connection()) { (client) throws(ControlError) in
            try Self.records(client)
        }
        var merged: [String: MergedVolume] = [:]
        var failures: [(TCPAddress, ControlError)] = []
        for (server, result) in zip(servers, results) {
            switch result {
            case .success(let records):
                for (name, stat, dedup) in records {
                    merged[name, default: MergedVolume(name: name)].add(stat, on: server)
                    merged[name]?.add(dedup)
                }
            case .failure(let error):
                failures.append((server, error))
            }
        }
        let volumes = merged.values.sorted { $0.name < $1.name }
        if global.json {
            JSONValue.object([
                ("volumes", .array(volumes.map(\.json))),
                ("unreachable", .array(failures.map { server, error in
                    .object([("address", .string(server.description)), ("error", .string(error.description))])
                })),
            ]).print()
            try Fanout.requireAuthenticated(results)
            return
        }
        var table = TextTable([("NAME", .left), ("SIZE", .right), ("PAGES", .right), ("STORED", .right),
                               ("EPOCH", .right), ("META", .right), ("DEDUP", .left), ("SERVERS", .left)])
        for volume in volumes {
            table.add([volume.name, HumanFormat.bytes(volume.sizeBytes) + (volume.sizeConsistent ? "" : "!"),
                       "\(volume.storedPages)", HumanFormat.bytes(volume.storedBytes), "\(volume.epoch)",
                       "\(volume.metadataVersion)", volume.dedupText, HumanFormat.list(volume.servers.map(\.description))])
        }
        if volumes.isEmpty {
            print("no volumes on \(servers.count - failures.count) of \(servers.count) servers")
        } else {
            table.print()
        }
        if !failures.isEmpty {
            print("")
            for (_, error) in failures { print("not listed: \(error)") }
        }
        try Fanout.requireAuthenticated(results)
    }

    /// Every volume on the server with its `VOLUME_STAT` and, from a server that
    /// de-duplicates, its `VOLUME_DEDUP_STAT` (a volume deleted in between is left out).
    static func records(_ client: ControlClient) throws(ControlError)
        -> [(String, ControlClient.VolumeStat, VolumeDedupStatistics?)] {
        var records: [(String, ControlClient.VolumeStat, VolumeDedupStatistics?)] = []
        for entry in try client.volumeList() {
            do throws(ControlError) {
                let stat = try client.volumeStat(entry.name)
                records.append((entry.name, stat, client.deduplicates ? try client.volumeDedupStat(entry.name) : nil))
            } catch where error.status == .notFound {
                continue
            }
        }
        return records
    }
}
