import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl dedup`: how much memory de-duplication saves, per server and for the pool.
struct DedupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dedup",
        abstract: "Show what de-duplication saves: logical pages, stored frames and the saving, per server and pool.",
        discussion: """
            One row per --server and one for the pool (the sum of the reachable ones): LOGICAL \
            is what the volumes' written pages would cost without sharing (every replica \
            counts), STORED the memory they do cost, SAVED the difference and its share of \
            LOGICAL; SHARED counts frames two or more pages point at, PRIVATE the pages of \
            volumes created with --no-dedup; DUPLICATES (pages written that a server held \
            already), COLLISIONS (hash matches whose bytes differed, each caught by the byte \
            compare) and COW (writes that moved a page off a shared frame) are totals since \
            each server started. An unreachable server is a row saying so; the exit status is \
            still 0 (but 1 if a server's cluster-key handshake failed: see --key-file).
            """)

    @OptionGroup var global: GlobalOptions

    func validate() throws { try global.requireServers() }

    func run() throws {
        let servers = global.servers
        let results = Fanout.run(servers, try global.connection()) { (client) throws(ControlError) in try client.dedupStat() }
        let reached = results.compactMap { try? $0.get() }
        let pool = Self.sum(reached)
        if global.json {
            JSONValue.object([
                ("servers", .array(zip(servers, results).map { server, result in
                    switch result {
                    case .success(let stat):
                        return .object([("address", .string(server.description)), ("reachable", .bool(true))] + Self.fields(stat))
                    case .failure(let error):
                        return .object([("address", .string(server.description)), ("reachable", .bool(false)),
                                        ("error", .string(error.description))])
                    }
                })),
                ("pool", .object([("servers", .unsigned(UInt64(reached.count)))] + Self.fields(pool))),
            ]).print()
        } else {
            table(servers, results, pool: pool, reached: reached.count)
        }
        try Fanout.requireAuthenticated(results)
    }

    /// The pool's numbers: every server's added up.
    static func sum(_ stats: [DedupStatistics]) -> DedupStatistics {
        var pool = DedupStatistics(hashAlgorithm: stats.first?.hashAlgorithm ?? DedupMessages.hashMX128, logicalPages: 0,
                                   storedFrames: 0, indexedFrames: 0, sharedFrames: 0, privatePages: 0, pagesHashed: 0,
                                   duplicatePages: 0, hashCollisions: 0, copiesOnWrite: 0, clonedPages: 0)
        for stat in stats {
            pool.logicalPages += stat.logicalPages
            pool.storedFrames += stat.storedFrames
            pool.indexedFrames += stat.indexedFrames
            pool.sharedFrames += stat.sharedFrames
            pool.privatePages += stat.privatePages
            pool.pagesHashed += stat.pagesHashed
            pool.duplicatePages += stat.duplicatePages
            pool.hashCollisions += stat.hashCollisions
            pool.copiesOnWrite += stat.copiesOnWrite
            pool.clonedPages += stat.clonedPages
        }
        return pool
    }

    static func fields(_ stat: DedupStatistics) -> [(String, JSONValue)] {
        let page = UInt64(WireLimits.pageSize)
        return [
            ("logicalPages", .unsigned(stat.logicalPages)),
            ("logicalBytes", .unsigned(stat.logicalPages * page)),
            ("storedFrames", .unsigned(stat.storedFrames)),
            ("storedBytes", .unsigned(stat.storedFrames * page)),
            ("savedBytes", .unsigned(stat.savedFrames * page)),
            ("savingPercent", .number(HumanFormat.twoDecimals(stat.savingPercent))),
            ("distinctFrames", .unsigned(stat.indexedFrames)),
            ("sharedFrames", .unsigned(stat.sharedFrames)),
            ("privatePages", .unsigned(stat.privatePages)),
            ("pagesHashed", .unsigned(stat.pagesHashed)),
            ("duplicatePages", .unsigned(stat.duplicatePages)),
            ("hashCollisions", .unsigned(stat.hashCollisions)),
            ("copiesOnWrite", .unsigned(stat.copiesOnWrite)),
            ("clonedPages", .unsigned(stat.clonedPages)),
        ]
    }

    private func table(_ servers: [TCPAddress], _ results: [Result<DedupStatistics, ControlError>], pool: DedupStatistics,
                       reached: Int) {
        var table = TextTable([("SERVER", .left), ("STATE", .left), ("LOGICAL", .right), ("STORED", .right), ("SAVED", .right),
                               ("SAVED%", .right), ("SHARED", .right), ("PRIVATE", .right), ("DUPLICATES", .right),
                               ("COLLISIONS", .right), ("COW", .right)])
        func cells(_ stat: DedupStatistics) -> [String] {
            let page = UInt64(WireLimits.pageSize)
            return [HumanFormat.bytes(stat.logicalPages * page), HumanFormat.bytes(stat.storedFrames * page),
                    HumanFormat.bytes(stat.savedFrames * page), HumanFormat.percent(stat.savingPercent), "\(stat.sharedFrames)",
                    "\(stat.privatePages)", "\(stat.duplicatePages)", "\(stat.hashCollisions)", "\(stat.copiesOnWrite)"]
        }
        var problems: [String] = []
        for (server, result) in zip(servers, results) {
            switch result {
            case .success(let stat):
                table.add([server.description, "up"] + cells(stat))
            case .failure(let error):
                table.add([server.description, error.isUnreachable ? "unreachable" : "error"] + Array(repeating: "-", count: 9))
                problems.append(error.description)
            }
        }
        table.add(["pool", "\(reached) of \(servers.count)"] + cells(pool))
        table.print()
        if !problems.isEmpty {
            print("")
            for problem in problems { print(problem) }
        }
    }
}
