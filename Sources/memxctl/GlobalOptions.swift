import ArgumentParser
import LinuxSystem
import RemoteMem

/// The options every subcommand takes (before or after its name): the servers, JSON output,
/// the timeout and the cluster key.
struct GlobalOptions: ParsableArguments {
    @Option(name: .customLong("server"),
            help: ArgumentHelp("A memory server of the pool, HOST:PORT or [V6]:PORT; repeat for each server.",
                               valueName: "address"))
    var serverTexts: [String] = []

    @Flag(help: "Print one JSON document instead of the human table.")
    var json = false

    @Option(name: .customLong("timeout"),
            help: ArgumentHelp("Milliseconds to wait for a server to connect or answer.", valueName: "ms"))
    var timeoutMillis: Int = 2000

    @Option(help: ArgumentHelp("""
        The servers' cluster key (16 to 4096 bytes, mode 600), for servers started with \
        --key-file; each server must prove it back.
        """, valueName: "file"))
    var keyFile: String?

    /// The servers, parsed (validated in `validate`).
    var servers: [TCPAddress] { serverTexts.compactMap { TCPAddress(parsing: $0) } }

    /// Checks the values given. That --server was given at all is checked by each subcommand
    /// (`requireServers`): the root command parses these options too, and failing there would
    /// hide a subcommand's --help.
    func validate() throws {
        for text in serverTexts where TCPAddress(parsing: text) == nil {
            throw ValidationError("--server '\(text)' is not HOST:PORT (examples: 10.0.0.5:7400, [::1]:7400)")
        }
        guard Set(servers).count == servers.count else { throw ValidationError("--server lists a server twice") }
        guard (1...600_000).contains(timeoutMillis) else {
            throw ValidationError("--timeout must be 1 to 600000 ms, not \(timeoutMillis)")
        }
        _ = try clusterKey()
    }

    /// The key of --key-file, read and checked (nil without --key-file).
    func clusterKey() throws(ValidationError) -> ClusterKey? {
        guard let keyFile else { return nil }
        do {
            return try ClusterKey(contentsOf: keyFile)
        } catch {
            throw ValidationError("--key-file: \(error)")
        }
    }

    /// How to connect to each server: the timeout and the key.
    func connection() throws(ValidationError) -> Fanout.Connection {
        Fanout.Connection(timeoutMillis: timeoutMillis, clusterKey: try clusterKey())
    }

    /// Throws unless at least one --server was given.
    func requireServers() throws(ValidationError) {
        guard !serverTexts.isEmpty else { throw ValidationError("--server is required (at least one HOST:PORT)") }
    }
}
