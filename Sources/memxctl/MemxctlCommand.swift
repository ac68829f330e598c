import ArgumentParser

/// The `memxctl` command line: global options and the subcommands; each subcommand does its work
/// through `ControlClient`s, one per server.
struct MemxctlCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memxctl",
        abstract: "Create, list, inspect and delete MemX volumes; show each memory server's capacity and load.",
        usage: "memxctl --server HOST:PORT [--server HOST:PORT ...] [--key-file FILE] [--json] <subcommand> [arguments]",
        discussion: """
            memxctl talks to memx-server daemons (docs/PROTOCOL.md) directly: give every server \
            of the pool with --server (repeatable). A volume lives on every server of its pool, \
            so list, stat, create and delete look at all of them: list and stat merge what the \
            servers report by volume name; create and delete change every server and refuse to \
            start if one of them is unreachable (which they name), so a pool is never left half \
            changed by an outage.

            servers and list report unreachable servers (in the table and in the JSON) and still \
            exit 0. Servers started with --key-file need the same key here (--key-file); a wrong \
            or missing key is an error (exit 1) for every subcommand. Human tables go to stdout; --json prints one JSON document instead. Sizes \
            take K, M, G or T suffixes (binary units).

            Examples:
              memxctl --server 10.0.0.5:7400 --server 10.0.0.6:7400 servers
              memxctl --server 10.0.0.5:7400 --server 10.0.0.6:7400 create vm1 --size 20G
              memxctl --server 10.0.0.5:7400 --server 10.0.0.6:7400 create vm2 --from vm1
              memxctl --server 10.0.0.5:7400 --server 10.0.0.6:7400 dedup
              memxctl --server 10.0.0.5:7400 --server 10.0.0.6:7400 --json list

            Exit status: 0 done, 1 an operational error (one line on stderr), 2 bad flags.
            """,
        subcommands: [ServersCommand.self, ListCommand.self, StatCommand.self, CreateCommand.self, DeleteCommand.self,
                      DrainCommand.self, DedupCommand.self])

    @OptionGroup var global: GlobalOptions

    func run() throws {
        throw ValidationError("a subcommand is required: servers, list, stat, create, delete, drain or dedup (see --help)")
    }
}
