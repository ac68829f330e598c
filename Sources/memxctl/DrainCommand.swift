import ArgumentParser
import LinuxSystem
import RemoteMem

/// `memxctl drain`: marks servers as draining (or, with `--stop`, not any more), so the
/// backends using them move their page groups elsewhere before the servers leave.
struct DrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drain",
        abstract: "Start (or stop) draining every --server: backends move their page groups elsewhere.",
        discussion: """
            Sends SERVER_DRAIN to every --server. Each memx-vhost using a draining server notices \
            within a second, places nothing new there, copies the page groups it holds to the \
            other servers (with --replicas 1 too), then frees them on it; it logs each group. \
            Watch `memxctl servers`: the server may leave once its USED reaches zero (or holds \
            only volumes nobody serves). The server keeps serving meanwhile. Exit 1 naming any \
            server that could not be told.
            """)

    @OptionGroup var global: GlobalOptions

    @Flag(help: "Stop draining instead (the server takes new groups again).")
    var stop = false

    func validate() throws { try global.requireServers() }

    func run() throws {
        let draining = !stop
        let results = Fanout.run(global.servers, try global.connection()) { (client) throws(ControlError) in
            try client.serverDrain(draining)
        }
        var failures: [String] = []
        for result in results {
            if case .failure(let error) = result { failures.append(error.description) }
        }
        let done = zip(global.servers, results).compactMap { server, result -> String? in
            if case .success = result { return server.description }
            return nil
        }
        if global.json {
            JSONValue.object([
                (draining ? "draining" : "stopped", .array(done.map { .string($0) })),
                ("failed", .array(failures.map { .string($0) })),
            ]).print()
        } else if !done.isEmpty {
            print(draining ? "draining \(HumanFormat.list(done)): backends move their page groups elsewhere; watch `memxctl servers`"
                           : "stopped draining \(HumanFormat.list(done))")
        }
        try Fanout.requireAuthenticated(results)
        guard failures.isEmpty else { throw CommandFailure(failures.joined(separator: "; ")) }
    }
}
