import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl delete NAME`: deletes the volume from every server that has it.
struct DeleteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete",
        abstract: "Delete a volume (and free its pages) on every server that has it.",
        discussion: """
            Sends VOLUME_DELETE to every --server holding the volume; its pages are freed and \
            any backend's lease on it ends. Refuses (exit 1, nothing changed) if any server is \
            unreachable, naming it, or if no server has the volume.
            """)

    @OptionGroup var global: GlobalOptions

    @Argument(help: ArgumentHelp("The volume's name.", valueName: "name"))
    var name: String

    func validate() throws {
        try global.requireServers()
        try VolumeArguments.checkName(name)
    }

    func run() throws {
        let connection = try global.connection()
        let lookup = VolumeLookup(name: name, servers: global.servers, connection: connection)
        try lookup.requireEveryServer(toChange: "delete")
        let holders = lookup.present.map(\.server)
        guard !holders.isEmpty else { throw CommandFailure("volume '\(name)' not found on any server") }
        let name = self.name
        let results = Fanout.run(holders, connection) { (client) throws(ControlError) in
            do throws(ControlError) {
                try client.volumeDelete(name)
                return true
            } catch where error.status == .notFound {
                return false  // deleted by someone else in between
            }
        }
        var deleted: [TCPAddress] = []
        var failures: [String] = []
        for (server, result) in zip(holders, results) {
            switch result {
            case .success(true): deleted.append(server)
            case .success(false): break
            case .failure(let error): failures.append(error.description)
            }
        }
        guard failures.isEmpty else {
            let done = deleted.isEmpty ? "" : "; deleted from \(HumanFormat.list(deleted.map(\.description)))"
            throw CommandFailure("cannot delete volume '\(name)': " + failures.joined(separator: "; ") + done)
        }
        if global.json {
            JSONValue.object([
                ("deleted", .string(name)),
                ("servers", .array(deleted.map { .string($0.description) })),
                ("absent", .array(lookup.absent.map { .string($0.description) })),
            ]).print()
        } else {
            var line = "deleted volume '\(name)' from \(HumanFormat.list(deleted.map(\.description)))"
            let absent = lookup.absent
            if !absent.isEmpty { line += " (not on \(HumanFormat.list(absent.map(\.description))))" }
            print(line)
        }
    }
}
