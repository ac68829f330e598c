import Foundation
import LinuxSystem
import MemxTesting
import RemoteMem
import Testing

/// The real `memxctl` binary against two real `memx-server` processes: volumes created, listed,
/// inspected and deleted across both; the human tables and the `--json` documents; unreachable
/// servers reported (not fatal) by servers and list, fatal for create; exit statuses 0, 1 and 2.
/// Also `ControlClient`'s typed errors, which memxctl's messages come from.
@Suite("memxctl")
struct MemxctlTests {
    /// Two memx-servers (64 MiB and 32 MiB) and the `--server` flags naming them.
    final class Pool {
        let directory: String
        let servers: [ServerProcess]

        init(_ name: String) throws {
            let directory = try BackendProcess.temporaryDirectory(name)
            self.directory = directory
            servers = try [("64M", "a"), ("32M", "b")].map { memory, tag in
                try ServerProcess(arguments: ["--memory", memory], logPath: "\(directory)/\(tag).log")
            }
        }

        var addresses: [String] { servers.map { "127.0.0.1:\($0.port)" } }
        var flags: [String] { addresses.flatMap { ["--server", $0] } }

        func client(_ index: Int) throws -> ControlClient {
            try ControlClient(connectingTo: TCPAddress(host: "127.0.0.1", port: servers[index].port), timeoutMillis: 5000)
        }

        deinit {
            for server in servers { _ = try? server.stop() }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// A 127.0.0.1 port nothing listens on (bound, then closed again).
    static func deadAddress() throws -> String {
        let port = try TCPListener(address: TCPAddress(host: "127.0.0.1", port: 0)).port
        return "127.0.0.1:\(port)"
    }

    static func memxctl(_ arguments: [String]) throws -> MemxctlProcess.Outcome {
        try MemxctlProcess.run(arguments)
    }

    static func json(_ text: String) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(text.utf8))
    }

    /// Opens `name` on `client` and writes `pages` pages from page 0.
    static func writePages(_ client: ControlClient, _ name: String, pages: Int) throws {
        var writer = PayloadWriter()
        writer.u64(0)
        writer.name(name)
        let opened = try client.call(.volumeOpen, payload: writer.bytes).header
        #expect(opened.statusValue == .ok)
        // Each page different (the page number in every byte), so de-duplication stores each.
        let reply = try client.call(.write, volume: opened.volume, epoch: opened.epoch, pageCount: UInt32(pages),
                                    payload: (0..<pages).flatMap { [UInt8](repeating: 0x5a &+ UInt8($0), count: WireLimits.pageSize) })
        #expect(reply.header.statusValue == .ok)
    }

    @Test("create, list, stat, servers and delete across two servers; tables and --json")
    func volumeLifecycle() throws {
        let pool = try Pool("ctl-life")
        let (a, b) = (pool.addresses[0], pool.addresses[1])

        let created = try Self.memxctl(pool.flags + ["create", "vm1", "--size", "8M"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("created volume 'vm1' (8 MiB)") && created.stdout.contains(a) && created.stdout.contains(b))
        try Self.writePages(try pool.client(0), "vm1", pages: 3)
        try Self.writePages(try pool.client(1), "vm1", pages: 1)

        // list: one row for vm1, on both servers, with the size and the summed pages.
        let list = try Self.memxctl(pool.flags + ["list"])
        #expect(list.status == 0 && list.stderr.isEmpty, "\(list.stderr)")
        let row = list.stdout.split(separator: "\n").first { $0.hasPrefix("vm1 ") }.map(String.init) ?? ""
        #expect(row.contains("8 MiB") && row.contains("16 KiB") && row.contains("\(a), \(b)"), "\(list.stdout)")
        #expect(list.stdout.hasPrefix("NAME "))

        let listJSON = try #require(try Self.json(try Self.memxctl(pool.flags + ["--json", "list"]).stdout) as? [String: Any])
        let volumes = try #require(listJSON["volumes"] as? [[String: Any]])
        #expect(volumes.count == 1)
        let volume = try #require(volumes.first)
        #expect(volume["name"] as? String == "vm1")
        #expect(volume["sizeBytes"] as? Int == 8 << 20)
        #expect(volume["sizeConsistent"] as? Bool == true)
        #expect(volume["storedPages"] as? Int == 4)
        #expect(volume["storedBytes"] as? Int == 4 * 4096)
        #expect(volume["servers"] as? [String] == [a, b])
        #expect(volume["epoch"] as? Int == 1)
        #expect(volume["metadataVersion"] as? Int == 0)
        #expect((listJSON["unreachable"] as? [Any])?.isEmpty == true)

        // stat: per server.
        let stat = try Self.memxctl(pool.flags + ["stat", "vm1"])
        #expect(stat.status == 0, "\(stat.stderr)")
        #expect(stat.stdout.contains("size      8 MiB (8388608 bytes)"), "\(stat.stdout)")
        #expect(stat.stdout.contains("stored    4 pages (16 KiB) on 2 of 2 servers"), "\(stat.stdout)")
        let statJSON = try #require(try Self.json(try Self.memxctl(["--json", "stat", "vm1"] + pool.flags).stdout) as? [String: Any])
        let perServer = try #require(statJSON["perServer"] as? [[String: Any]])
        #expect(perServer.map { $0["address"] as? String } == [a, b])
        #expect(perServer.map { $0["state"] as? String } == ["present", "present"])
        #expect(perServer.map { $0["storedPages"] as? Int } == [3, 1])
        #expect(perServer.map { $0["epoch"] as? Int } == [1, 1])

        // servers: capacity, use, volumes.
        let servers = try Self.memxctl(pool.flags + ["servers"])
        #expect(servers.status == 0, "\(servers.stderr)")
        let lines = servers.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 3 && lines[0].hasPrefix("SERVER"), "\(servers.stdout)")
        #expect(lines[1].hasPrefix(a) && lines[1].contains(" up ") && lines[1].contains("64 MiB") && lines[1].contains("12 KiB"))
        #expect(lines[2].hasPrefix(b) && lines[2].contains("32 MiB"))
        let serversJSON = try #require(try Self.json(try Self.memxctl(pool.flags + ["--json", "servers"]).stdout) as? [[String: Any]])
        #expect(serversJSON.count == 2)
        #expect(serversJSON.map { $0["address"] as? String } == [a, b])
        #expect(serversJSON.map { $0["reachable"] as? Bool } == [true, true])
        #expect(serversJSON.map { $0["capacityBytes"] as? Int } == [64 << 20, 32 << 20])
        #expect(serversJSON.map { $0["usedBytes"] as? Int } == [3 * 4096, 4096])
        #expect(serversJSON.map { $0["volumes"] as? Int } == [1, 1])
        for server in serversJSON {
            for key in ["freeBytes", "usePercent", "connections", "requestsServed", "roundTripMicros", "serverID"] {
                #expect(server[key] != nil, "servers --json lacks \(key)")
            }
        }

        // create twice: exit 1, one line, "exists".
        let again = try Self.memxctl(pool.flags + ["create", "vm1", "--size", "8M"])
        #expect(again.status == 1 && again.stdout.isEmpty)
        #expect(again.stderr.split(separator: "\n").count == 1 && again.stderr.hasPrefix("memxctl: ")
                && again.stderr.contains("exists"), "\(again.stderr)")

        // delete: gone everywhere; a second delete and a stat fail.
        let deleted = try Self.memxctl(pool.flags + ["delete", "vm1"])
        #expect(deleted.status == 0 && deleted.stdout.contains("deleted volume 'vm1' from \(a), \(b)"), "\(deleted.stderr)")
        let empty = try #require(try Self.json(try Self.memxctl(pool.flags + ["--json", "list"]).stdout) as? [String: Any])
        #expect((empty["volumes"] as? [Any])?.isEmpty == true)
        #expect(try pool.client(0).serverStat().usedFrames == 0)
        for arguments in [["delete", "vm1"], ["stat", "vm1"]] {
            let missing = try Self.memxctl(pool.flags + arguments)
            #expect(missing.status == 1 && missing.stderr == "memxctl: volume 'vm1' not found on any server\n", "\(missing.stderr)")
        }
    }

    @Test("drain: marks the server draining (servers shows it, table and --json); --stop undoes it")
    func drain() throws {
        let pool = try Pool("ctl-drain")
        let started = try Self.memxctl(["--server", pool.addresses[1], "drain"])
        #expect(started.status == 0, "\(started.stderr)")
        #expect(started.stdout.contains("draining \(pool.addresses[1])"))
        #expect(try pool.client(1).serverStat().isDraining)
        #expect(try !pool.client(0).serverStat().isDraining)
        let table = try Self.memxctl(pool.flags + ["servers"])
        #expect(table.stdout.split(separator: "\n").contains { $0.contains(pool.addresses[1]) && $0.contains("draining") }, "\(table.stdout)")
        let json = try Self.memxctl(pool.flags + ["--json", "servers"])
        let rows = try #require(try Self.json(json.stdout) as? [[String: Any]])
        #expect(rows.map { $0["draining"] as? Bool } == [false, true])
        let stopped = try Self.memxctl(["--server", pool.addresses[1], "drain", "--stop"])
        #expect(stopped.status == 0 && stopped.stdout.contains("stopped draining"))
        #expect(try !pool.client(1).serverStat().isDraining)
        let dead = try Self.memxctl(["--server", try Self.deadAddress(), "drain"])
        #expect(dead.status == 1 && !dead.stderr.isEmpty)
    }

    @Test("an unreachable server: servers and list report it and exit 0; create and delete exit 1 naming it")
    func unreachableServer() throws {
        let pool = try Pool("ctl-dead")
        let dead = try Self.deadAddress()
        let flags = pool.flags + ["--server", dead]
        #expect(try Self.memxctl(pool.flags + ["create", "keep", "--size", "1M"]).status == 0)

        let servers = try Self.memxctl(flags + ["servers"])
        #expect(servers.status == 0, "\(servers.stderr)")
        let row = servers.stdout.split(separator: "\n").first { $0.hasPrefix(dead) }.map(String.init) ?? ""
        #expect(row.contains("unreachable"), "\(servers.stdout)")
        #expect(servers.stdout.contains("\(dead): connection refused"))
        let serversJSON = try #require(try Self.json(try Self.memxctl(flags + ["--json", "servers"]).stdout) as? [[String: Any]])
        #expect(serversJSON.map { $0["reachable"] as? Bool } == [true, true, false])
        #expect((serversJSON[2]["error"] as? String)?.contains("connection refused") == true)

        let list = try Self.memxctl(flags + ["--json", "list"])
        #expect(list.status == 0)
        let listJSON = try #require(try Self.json(list.stdout) as? [String: Any])
        #expect((listJSON["volumes"] as? [[String: Any]])?.first?["name"] as? String == "keep")
        #expect((listJSON["unreachable"] as? [[String: Any]])?.first?["address"] as? String == dead)

        for arguments in [["create", "new", "--size", "1M"], ["delete", "keep"]] {
            let refused = try Self.memxctl(flags + arguments)
            #expect(refused.status == 1 && refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
            #expect(refused.stderr.contains(dead) && refused.stderr.contains("nothing was changed"), "\(refused.stderr)")
        }
        let stillThere = try #require(try Self.json(try Self.memxctl(pool.flags + ["--json", "list"]).stdout) as? [String: Any])
        #expect((stillThere["volumes"] as? [[String: Any]])?.map { $0["name"] as? String } == ["keep"], "nothing created or deleted")
    }

    @Test("bad flags: one line on stderr naming the problem, exit status 2; --help exits 0")
    func badFlags() throws {
        let server = ["--server", "127.0.0.1:9"]
        let cases: [(arguments: [String], mentions: String)] = [
            ([], "subcommand"),
            (["list"], "--server"),
            (["--server", "nowhere", "list"], "--server"),
            (server + ["--timeout", "0", "list"], "--timeout"),
            (server + ["frobnicate"], "frobnicate"),
            (server + ["create", "vm1"], "--size"),
            (server + ["create", "vm1", "--size", "12X"], "--size"),
            (server + ["create", "vm1", "--size", "1000"], "4 KiB"),
            (server + ["create", "bad/name", "--size", "1M"], "bad/name"),
            (server + ["stat"], "name"),
            (server + ["delete", ".hidden"], ".hidden"),
            (server + ["list", "--bogus"], "--bogus"),
        ]
        for (arguments, mentions) in cases {
            let outcome = try Self.memxctl(arguments)
            #expect(outcome.status == 2, "\(arguments): \(outcome.stderr)")
            let lines = outcome.stderr.split(separator: "\n")
            #expect(lines.count == 1 && lines.first?.hasPrefix("memxctl: ") == true && outcome.stderr.contains(mentions),
                    "\(arguments): \(outcome.stderr)")
            #expect(outcome.stdout.isEmpty)
        }
        for arguments in [["--help"], ["create", "--help"], ["help", "servers"]] {
            let help = try Self.memxctl(arguments)
            #expect(help.status == 0 && help.stdout.contains("USAGE:"), "\(arguments): \(help.stderr)")
        }
    }

    @Test("ControlClient: typed errors for a refused connect, a silent server, NOT_FOUND, EXISTS and bad arguments")
    func controlClientErrors() throws {
        let dead = try #require(TCPAddress(parsing: try Self.deadAddress()))
        #expect(throws: ControlError.connectionRefused(server: dead.description)) {
            try ControlClient(connectingTo: dead, timeoutMillis: 1000)
        }

        // A listener that never accepts: the connect completes in the backlog, HELLO gets no reply.
        let silent = try TCPListener(address: TCPAddress(host: "127.0.0.1", port: 0))
        let silentAddress = TCPAddress(host: "127.0.0.1", port: silent.port)
        #expect(throws: ControlError.timedOut(server: silentAddress.description, operation: "HELLO", milliseconds: 200)) {
            try ControlClient(connectingTo: silentAddress, timeoutMillis: 200)
        }
        let timedOut = try MemxctlProcess.run(["--server", silentAddress.description, "--timeout", "200", "servers"])
        #expect(timedOut.status == 0 && timedOut.stdout.contains("HELLO timed out after 200 ms"), "\(timedOut.stdout)")

        let pool = try Pool("ctl-client")
        let client = try pool.client(0)
        #expect(client.hello?.version == WireLimits.version && client.hello?.serverID.count == 16)
        let server = client.server.description
        #expect(throws: ControlError.refused(server: server, operation: .volumeStat, status: .notFound, volume: "nope")) {
            try client.volumeStat("nope")
        }
        try client.volumeCreate("twice", sizeBytes: 1 << 20)
        do {
            try client.volumeCreate("twice", sizeBytes: 1 << 20)
            Issue.record("a second create succeeded")
        } catch {
            #expect(error.status == .exists && !error.isUnreachable)
            #expect(error.description == "\(server): volume 'twice' exists (EXISTS)")
        }
        let entries = try client.volumeList()
        #expect(entries.map(\.name) == ["twice"] && entries.map(\.sizeBytes) == [1 << 20])
        #expect(try client.volumeStat("twice").sizeBytes == 1 << 20)
        #expect(try client.ping() > .zero)
        #expect(try client.serverStat().volumeCount == 1)
        #expect(throws: ControlError.self) { try client.volumeCreate("bad/name", sizeBytes: 4096) }
        #expect(throws: ControlError.self) { try client.volumeCreate("odd", sizeBytes: 4097) }
        try client.volumeDelete("twice")
        #expect(throws: ControlError.refused(server: server, operation: .volumeDelete, status: .notFound, volume: "twice")) {
            try client.volumeDelete("twice")
        }
    }
}
