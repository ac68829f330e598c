import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl servers`: each server's capacity, use and load, and its round trip.
struct ServersCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "servers",
        abstract: "Show each server's capacity, use and load, and its PING round trip.",
        discussion: """
            One row per --server: capacity, used and free memory, use %, volumes, open \
            connections and requests served (both counting memxctl's own), and the median \
            round trip of 5 PINGs in microseconds. An unreachable server is a row saying so, \
            with the reason below the table; the exit status is still 0 (but 1 if a server's \
            cluster-key handshake failed: see --key-file).
            """)

    /// PINGs per server; the median is reported.
    static let pingCount = 5

    @OptionGroup var global: GlobalOptions

    func validate() throws { try global.requireServers() }

    /// What one reachable server reported.
    struct Report: Sendable {
        var serverID: String
        var stat: ControlClient.ServerStat
        var roundTrip: Duration
    }

    func run() throws {
        let servers = global.servers
        let results = Fanout.run(servers, try global.connection()) { (client) throws(ControlError) in
            let stat = try client.serverStat()
            var trips: [Duration] = []
            for _ in 0..<Self.pingCount { trips.append(try client.ping()) }
            return Report(serverID: client.hello?.serverIDHex ?? "", stat: stat, roundTrip: trips.sorted()[trips.count / 2])
        }
        if global.json {
            JSONValue.array(zip(servers, results).map { Self.json($0, $1) }).print()
        } else {
            Self.table(servers, results)
        }
        try Fanout.requireAuthenticated(results)
    }

    static func json(_ server: TCPAddress, _ result: Result<Report, ControlError>) -> JSONValue {
        switch result {
        case .success(let report):
            let stat = report.stat
            return .object([
                ("address", .string(server.description)),
                ("reachable", .bool(true)),
                ("draining", .bool(stat.isDraining)),
                ("serverID", .string(report.serverID)),
                ("capacityBytes", .unsigned(stat.capacityBytes)),
                ("usedBytes", .unsigned(stat.usedBytes)),
                ("freeBytes", .unsigned(stat.freeBytes)),
                ("usePercent", .number(HumanFormat.twoDecimals(stat.usePercent))),
                ("volumes", .unsigned(UInt64(stat.volumeCount))),
                ("connections", .unsigned(UInt64(stat.connectionCount))),
                ("requestsServed", .unsigned(stat.requestsServed)),
                ("bytesIn", .unsigned(stat.bytesIn)),
                ("bytesOut", .unsigned(stat.bytesOut)),
                ("roundTripMicros", .integer(HumanFormat.microseconds(report.roundTrip))),
            ])
        case .failure(let error):
            return .object([
                ("address", .string(server.description)),
                ("reachable", .bool(false)),
                ("error", .string(error.description)),
            ])
        }
    }

    static func table(_ servers: [TCPAddress], _ results: [Result<Report, ControlError>]) {
        var table = TextTable([("SERVER", .left), ("STATE", .left), ("CAPACITY", .right), ("USED", .right),
                               ("FREE", .right), ("USE%", .right), ("VOLUMES", .right), ("CONNS", .right),
                               ("REQUESTS", .right), ("RTT µs", .right)])
        var problems: [String] = []
        for (server, result) in zip(servers, results) {
            switch result {
            case .success(let report):
                let stat = report.stat
                table.add([server.description, stat.isDraining ? "draining" : "up", HumanFormat.bytes(stat.capacityBytes), HumanFormat.bytes(stat.usedBytes),
                           HumanFormat.bytes(stat.freeBytes), HumanFormat.percent(stat.usePercent), "\(stat.volumeCount)",
                           "\(stat.connectionCount)", "\(stat.requestsServed)", "\(HumanFormat.microseconds(report.roundTrip))"])
            case .failure(let error):
                table.add([server.description, error.isUnreachable ? "unreachable" : "error"]
                          + Array(repeating: "-", count: 8))
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
