import LinuxSystem
import RemoteMem

/// Where a volume is in the pool: each server's `VOLUME_STAT` of it, or nil where it is absent.
struct VolumeLookup {
    let name: String
    let servers: [TCPAddress]
    /// Per server (in --server order): the volume's record, nil if absent, or why the server
    /// could not be asked.
    let results: [Result<ControlClient.VolumeStat?, ControlError>]
    /// Per server, with `withDedup`: the volume's sharing there (nil: absent, unreachable, or a
    /// server that does not de-duplicate).
    let dedup: [VolumeDedupStatistics?]

    /// Asks every server at once (with `withDedup`, `VOLUME_DEDUP_STAT` too).
    init(name: String, servers: [TCPAddress], connection: Fanout.Connection, withDedup: Bool = false) {
        self.name = name
        self.servers = servers
        let answers = Fanout.run(servers, connection) {
            (client) throws(ControlError) -> (ControlClient.VolumeStat, VolumeDedupStatistics?)? in
            do throws(ControlError) {
                let stat = try client.volumeStat(name)
                return (stat, withDedup && client.deduplicates ? try client.volumeDedupStat(name) : nil)
            } catch where error.status == .notFound {
                return nil
            }
        }
        results = answers.map { $0.map { $0?.0 } }
        dedup = answers.map { answer in
            guard case .success(let found?) = answer else { return nil }
            return found.1
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
