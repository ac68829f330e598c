import LinuxSystem
import RemoteMem

/// Where a volume is in the pool: each server's `VOLUME_STAT` of it, or nil where it is absent.
struct VolumeLookup {
    let name: String
    let servers: [TCPAddress]
    /// Per server (in --server order): the volume's record, nil if absent, or why the server
    /// could not be asked.
    let results: [Result<ControlClient.VolumeStat?, ControlError>]

    /// Asks every server at once.
    init(name: String, servers: [TCPAddress], connection: Fanout.Connection) {
        self.name = name
        self.servers = servers
        results = Fanout.run(servers, connection) { (client) throws(ControlError) in
            do throws(ControlError) {
                return try client.volumeStat(name)
            } catch where error.status == .notFound {
                return nil
            }
        }
    }

    /// The servers holding the volume, with their records.
    var present: [(server: TCPAddress, stat: ControlClient.VolumeStat)] {
        zip(servers, results).compactMap { server, result in
            guard case .success(let stat?) = result else { return nil }
            return (server, stat)
        }
    }

    /// The servers that answered that they have no such volume.
    var absent: [TCPAddress] {
        zip(servers, results).compactMap { server, result in
            guard case .success(nil) = result else { return nil }
            return server
        }
    }

    /// The servers that could not be asked, with the error.
    var failures: [(server: TCPAddress, error: ControlError)] {
        zip(servers, results).compactMap { server, result in
            guard case .failure(let error) = result else { return nil }
            return (server, error)
        }
    }

    /// Throws a `CommandFailure` naming every server that could not be asked, so a change
    /// (create, delete) starts only when the whole pool answers.
    func requireEveryServer(toChange verb: String) throws(CommandFailure) {
        let failures = self.failures
        guard !failures.isEmpty else { return }
        throw CommandFailure("cannot \(verb) volume '\(name)', nothing was changed: "
                             + failures.map(\.error.description).joined(separator: "; "))
    }
}
