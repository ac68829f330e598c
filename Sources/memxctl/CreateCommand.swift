import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl create NAME --size SIZE`: creates the volume on every server.
struct CreateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a volume on every server.",
        discussion: """
            Sends VOLUME_CREATE to every --server. Refuses (exit 1, nothing changed) if any \
            server is unreachable, naming it, or if the volume exists on any server. If a \
            server refuses the create (e.g. FULL: it holds the most volumes it can), the \
            volume is deleted again from the servers that had created it.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The volume's name: 1 to 64 of [A-Za-z0-9._-], not starting with '.'.", valueName: "name"))
    var name: String

    @Option(help: ArgumentHelp("The volume's size, a multiple of 4 KiB, with optional K/M/G/T suffix (binary units).",
                               valueName: "size"))
    var size: String

    func validate() throws {
        try global.requireServers()
        try VolumeArguments.checkName(name)
        _ = try VolumeArguments.size(size)
    }

    func run() throws {
        let sizeBytes = try VolumeArguments.size(size)
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
        let results = Fanout.run(servers, connection) { (client) throws(ControlError) in
            try client.volumeCreate(name, sizeBytes: sizeBytes)
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
        if global.json {
            JSONValue.object([
                ("created", .string(name)),
                ("sizeBytes", .unsigned(sizeBytes)),
                ("servers", .array(servers.map { .string($0.description) })),
            ]).print()
        } else {
            print("created volume '\(name)' (\(HumanFormat.bytes(sizeBytes))) on \(HumanFormat.list(servers.map(\.description)))")
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
