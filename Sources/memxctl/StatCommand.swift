import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl stat NAME`: one volume in detail, server by server.
struct StatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat",
        abstract: "Show one volume in detail: its size, and per server the pages stored, lease epoch and metadata version.",
        discussion: """
            Fails (exit 1) if no reachable server has the volume. Servers that do not hold it \
            are listed as absent, unreachable ones as unreachable.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The volume's name.", valueName: "name"))
    var name: String

    func validate() throws {
        try global.requireServers()
        try VolumeArguments.checkName(name)
    }

    func run() throws {
        let lookup = VolumeLookup(name: name, servers: global.servers, connection: try global.connection(), withDedup: true)
        let present = lookup.present
        guard !present.isEmpty else {
            let failures = lookup.failures
            if failures.isEmpty { throw CommandFailure("volume '\(name)' not found on any server") }
            throw CommandFailure("volume '\(name)' not found on the reachable servers; not asked: "
                                 + failures.map(\.error.description).joined(separator: "; "))
        }
        var merged = MergedVolume(name: name)
        for (server, stat) in present { merged.add(stat, on: server) }
        for dedup in lookup.dedup { merged.add(dedup) }
        if global.json {
            json(lookup, merged).print()
        } else {
            table(lookup, merged)
        }
        try Fanout.requireAuthenticated(lookup.results)
    }

    private func json(_ lookup: VolumeLookup, _ merged: MergedVolume) -> JSONValue {
        guard case .object(var members) = merged.json else { return merged.json }
        members.append(("perServer", .array(zip(zip(lookup.servers, lookup.results), lookup.dedup).map { pair, dedup in
            let (server, result) = pair
            var fields: [(String, JSONValue)] = [("address", .string(server.description))]
            switch result {
            case .success(let stat?):
                fields += [("state", .string("present")), ("sizeBytes", .unsigned(stat.sizeBytes)),
                           ("storedPages", .unsigned(stat.storedPages)), ("storedBytes", .unsigned(stat.storedBytes)),
                           ("epoch", .unsigned(stat.epoch)), ("metadataVersion", .unsigned(stat.metadataVersion))]
                if let dedup {
                    fields += [("dedup", .bool(dedup.deduplicates)), ("sharedPages", .unsigned(dedup.sharedPages)),
                               ("chargedBytes", .unsigned(dedup.chargedBytes))]
                }
            case .success(nil):
                fields.append(("state", .string("absent")))
            case .failure(let error):
                fields += [("state", .string("unreachable")), ("error", .string(error.description))]
            }
            return .object(fields)
        })))
        return .object(members)
    }

    private func table(_ lookup: VolumeLookup, _ merged: MergedVolume) {
        print("volume    \(merged.name)")
        print("size      \(HumanFormat.bytes(merged.sizeBytes)) (\(merged.sizeBytes) bytes)"
              + (merged.sizeConsistent ? "" : ", but the servers disagree"))
        print("stored    \(merged.storedPages) pages (\(HumanFormat.bytes(merged.storedBytes))) on "
              + "\(merged.servers.count) of \(lookup.servers.count) servers")
        print("epoch     \(merged.epoch)")
        print("metadata  version \(merged.metadataVersion)")
        if let deduplicates = merged.deduplicates {
            print(deduplicates
                  ? "dedup     on: \(merged.sharedPages) of \(merged.storedPages) pages share their memory; "
                    + "its fair share of memory is \(HumanFormat.bytes(merged.chargedBytes))"
                  : "dedup     off: its pages share no memory")
        }
        print("")
        var table = TextTable([("SERVER", .left), ("STATE", .left), ("SIZE", .right), ("PAGES", .right),
                               ("STORED", .right), ("EPOCH", .right), ("META", .right), ("SHARED", .right), ("CHARGED", .right)])
        var problems: [String] = []
        for ((server, result), dedup) in zip(zip(lookup.servers, lookup.results), lookup.dedup) {
            switch result {
            case .success(let stat?):
                table.add([server.description, "present", HumanFormat.bytes(stat.sizeBytes), "\(stat.storedPages)",
                           HumanFormat.bytes(stat.storedBytes), "\(stat.epoch)", "\(stat.metadataVersion)",
                           dedup.map { "\($0.sharedPages)" } ?? "-", dedup.map { HumanFormat.bytes($0.chargedBytes) } ?? "-"])
            case .success(nil):
                table.add([server.description, "absent"] + Array(repeating: "-", count: 7))
            case .failure(let error):
                table.add([server.description, error.isUnreachable ? "unreachable" : "error"] + Array(repeating: "-", count: 7))
                problems.append(error.description)
            }
        }
        table.print()
        if !problems.isEmpty {
            print("")
            for problem in problems { print(problem) }
        }
    }
}
