import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl create NAME --size SIZE [--no-dedup] [--from TEMPLATE]`: creates the volume on
/// every server, empty or as a clone of a template.
struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a volume on every server, empty or as a clone of a template.",
        discussion: """
            Sends VOLUME_CREATE to every --server (with --from, VOLUME_CLONE). Refuses (exit 1, \
            nothing changed) if any server is unreachable, naming it, or if the volume exists \
            on any server. If a server refuses the create (e.g. FULL: it holds the most volumes \
            it can, or a copy does not fit), the volume is deleted again from the servers that \
            had created it.

            Volumes de-duplicate by default: a page whose content a server holds already costs \
            no memory there. --no-dedup makes a volume that shares no frame with any other page \
            (for tenants that want none of their pages stored once for several).

            --from TEMPLATE makes the new volume a clone: every server gives it the template's \
            size, group table and pages, sharing each page's memory with the template until one \
            of them writes it (a clone with --no-dedup, or of a template without \
            de-duplication, copies the pages instead). --size may be left out; if given it must \
            be the template's. Clone a template no backend is writing: a backend's write-back \
            cache may hold writes the servers do not have yet.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The volume's name: 1 to 64 of [A-Za-z0-9._-], not starting with '.'.", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("The volume's size, a multiple of 4 KiB, with optional K/M/G/T suffix (binary units); with --from, the template's.",
                               valueName: "size"))
    var size: String?

    @Option(help: ArgumentHelp("Clone this volume: share every page of it until written.", valueName: "template"))
    var from: String?

    @Flag(help: "Do not de-duplicate this volume's pages: they share no memory with any other page.")
    var noDedup = false

    func validate() throws {
        try global.requireServers()
        try VolumeArguments.checkName(name)
        if let size { _ = try VolumeArguments.size(size) }
        if let from {
            try VolumeArguments.checkName(from)
            guard from != name else { throw ValidationError("--from names the new volume itself ('\(name)')") }
        } else if size == nil {
            throw ValidationError("--size is required (or --from TEMPLATE, which gives the template's size)")
        }
    }

    func run() throws {
        let servers = global.servers
        let connection = try global.connection()
        let lookup = VolumeLookup(name: name, servers: servers, connection: connection)
        try lookup.requireEveryServer(toChange: "create")
        let present = lookup.present
        guard present.isEmpty else {
            let sizes = Set(present.map(\.stat.sizeBytes)).sorted().map(HumanFormat.bytes)
            throw CommandFailure("volume '\(name)' exists on \(HumanFormat.list(present.map(\.server.description))) "
                                 + "(size \(sizes.joined(separator: ", "))); nothing was changed")
        }
        let name = self.name
        let deduplicate = !noDedup
        let sizeBytes: UInt64
        let results: [Result<CloneResult?, ControlError>]
        if let template = from {
            sizeBytes = try templateSize(template, servers: servers, connection: connection)
            results = Fanout.run(servers, connection) { (client) throws(ControlError) in
                try client.volumeClone(template: template, name: name, deduplicate: deduplicate)
            }
        } else {
            sizeBytes = try VolumeArguments.size(size ?? "")
            results = Fanout.run(servers, connection) { (client) throws(ControlError) in
                try client.volumeCreate(name, sizeBytes: sizeBytes, deduplicate: deduplicate)
                return nil
            }
        }
        let failures = zip(servers, results).compactMap { server, result -> ControlError? in
            guard case .failure(let error) = result else { return nil }
            return error
        }
        guard failures.isEmpty else {
            try rollBack(created: zip(servers, results).compactMap { server, result in
                guard case .success = result else { return nil }
                return server
            }, failures: failures, connection: connection)
        }
        let clones = results.compactMap { try? $0.get() }
        report(sizeBytes: sizeBytes, servers: servers, clones: clones)
    }

    /// The template's size, checked: on every server, one size, and --size (if given) equal to it.
    private func templateSize(_ template: String, servers: [TCPAddress], connection: Fanout.Connection) throws -> UInt64 {
        let lookup = VolumeLookup(name: template, servers: servers, connection: connection)
        try lookup.requireEveryServer(toChange: "clone")
        let absent = lookup.absent
        guard absent.isEmpty else {
            throw CommandFailure("template '\(template)' is not on \(HumanFormat.list(absent.map(\.description))); nothing was changed")
        }
        let sizes = Set(lookup.present.map(\.stat.sizeBytes))
        guard sizes.count == 1, let templateBytes = sizes.first else {
            throw CommandFailure("template '\(template)' has different sizes on the servers; nothing was changed")
        }
        if let size, try VolumeArguments.size(size) != templateBytes {
            throw ValidationError("--size \(size): a clone has its template's size, \(HumanFormat.bytes(templateBytes)) "
                                  + "(\(templateBytes) bytes); leave --size out")
        }
        return templateBytes
    }

    private func report(sizeBytes: UInt64, servers: [TCPAddress], clones: [CloneResult]) {
        let pages = clones.reduce(0) { $0 + $1.pages }
        let taken = clones.reduce(0) { $0 + $1.framesTaken }
        if global.json {
            var members: [(String, JSONValue)] = [
                ("created", .string(name)),
                ("sizeBytes", .unsigned(sizeBytes)),
                ("dedup", .bool(!noDedup)),
                ("servers", .array(servers.map { .string($0.description) })),
            ]
            if let from {
                members += [("from", .string(from)), ("pages", .unsigned(pages)),
                            ("framesTaken", .unsigned(taken)), ("bytesTaken", .unsigned(taken * UInt64(WireLimits.pageSize)))]
            }
            JSONValue.object(members).print()
            return
        }
        var line = "created volume '\(name)' (\(HumanFormat.bytes(sizeBytes))\(noDedup ? ", no de-duplication" : "")) "
        if let from {
            line += "as a clone of '\(from)' "
        }
        line += "on \(HumanFormat.list(servers.map(\.description)))"
        print(line)
        if from != nil {
            print("\(pages) page(s) on the servers, \(taken == 0 ? "all shared with the template" : "\(taken) new frame(s), \(HumanFormat.bytes(taken * UInt64(WireLimits.pageSize)))")")
        }
    }

    /// Deletes the volume from the servers that created it, then throws the failure.
    private func rollBack(created: [TCPAddress], failures: [ControlError],
                          connection: Fanout.Connection) throws(CommandFailure) -> Never {
        let name = self.name
        var message = "cannot create volume '\(name)': " + failures.map(\.description).joined(separator: "; ")
        if !created.isEmpty {
            let undone = Fanout.run(created, connection) { (client) throws(ControlError) in
                try client.volumeDelete(name)
            }
            let left = zip(created, undone).compactMap { server, result -> String? in
                guard case .failure = result else { return nil }
                return server.description
            }
            message += "; deleted it again from \(created.count - left.count) of \(created.count) servers that had created it"
            if !left.isEmpty { message += " (still on \(HumanFormat.list(left)): run memxctl delete \(name))" }
        }
        throw CommandFailure(message)
    }
}
