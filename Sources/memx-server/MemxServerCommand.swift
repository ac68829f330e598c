import ArgumentParser
import LinuxSystem
import Logging
import RemoteMem

/// The `memx-server` command line: parsing and validation only; `Wiring` starts the server.
struct MemxServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memx-server",
        abstract: "Lend this host's spare memory to MemX backends as 4 KiB pages of named volumes.",
        discussion: """
            memx-server listens on a TCP address for memx-vhost backends (and control tools) \
            speaking the MemX wire protocol (docs/PROTOCOL.md) and stores their volumes' pages \
            in at most --memory bytes of RAM: reserved at start, committed only as pages are \
            written, given back to the kernel when pages are trimmed or volumes deleted. A write \
            that does not fit is refused whole with the status FULL. RAM only: nothing survives \
            the process; redundancy across servers keeps data safe.

            Pages with the same content are stored once, however many volumes hold them \
            (de-duplication: a keyed 128-bit hash finds candidates, a byte compare confirms, a \
            write to a shared page is copy-on-write; docs/DEDUP.md). Volumes created with \
            `memxctl create --no-dedup` opt out; `memxctl dedup` shows the saving.

            It runs in the foreground and logs to stderr, starting with the address it listens \
            on (with --listen HOST:0 the kernel picks the port). SIGTERM or SIGINT stop it \
            cleanly: every connection is closed and the process exits 0.

            With --key-file, only clients proving the same cluster key are served: after HELLO, \
            client and server each prove the key with an HMAC over both sides' fresh nonces (the \
            key never crosses the wire); everything else is answered UNAUTHENTICATED, and a \
            failed AUTH closes the connection with a log line naming the peer. Make a key with \
            `head -c 32 /dev/urandom > memx.key; chmod 600 memx.key` and give every server, \
            memx-vhost and memxctl of the pool the same file. Authentication is not encryption: \
            page data travels in the clear, so keep the pool on a trusted network or a tunnel.

            Exit status: 0 after a clean stop, 1 on a runtime error, 2 on bad flags.
            """)

    @Option(help: ArgumentHelp("TCP address to listen on, HOST:PORT or [V6]:PORT (port 0: any free port).",
                               valueName: "address"))
    var listen: String?

    @Option(help: ArgumentHelp("Memory to lend, with optional K/M/G/T suffix (binary units); at least 4 KiB.",
                               valueName: "size"))
    var memory: String?

    @Option(help: ArgumentHelp("Serve Prometheus text metrics at http://ADDRESS/metrics.", valueName: "address"))
    var metricsListen: String?

    @Option(help: ArgumentHelp("""
        The cluster key clients must prove (16 to 4096 bytes, mode 600); without it any client \
        that reaches the port is served.
        """, valueName: "file"))
    var keyFile: String?

    @Option(help: ArgumentHelp("""
        tcp (default) or udp: with udp the server also serves the protocol over UDP on the same \
        port number (one datagram per frame, retransmission and a reply cache per client; \
        docs/PROTOCOL.md "UDP transport"); TCP stays on for memxctl and TCP clients.
        """, valueName: "tcp|udp"))
    var transport: String = "tcp"

    @Option(help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String = "info"

    /// The validated settings, or a one-line reason.
    func settings() throws(ValidationError) -> ServerSettings {
        guard let listenText = listen, !listenText.isEmpty else { throw ValidationError("--listen is required") }
        guard let address = TCPAddress(parsing: listenText) else {
            throw ValidationError("--listen '\(listenText)' is not HOST:PORT (examples: 0.0.0.0:7400, [::1]:7400)")
        }
        guard let memoryText = memory else { throw ValidationError("--memory is required") }
        guard let bytes = ByteSize(parsing: memoryText)?.bytes else {
            throw ValidationError("--memory '\(memoryText)' is not a size (examples: 512M, 64G, 4096)")
        }
        let frameBytes = UInt64(WireLimits.pageSize)
        guard bytes >= frameBytes, bytes / frameBytes <= UInt64(UInt32.max) else {
            throw ValidationError("--memory must be between 4 KiB and 16 TiB")
        }
        var metricsAddress: TCPAddress?
        if let metricsText = metricsListen {
            guard let parsed = TCPAddress(parsing: metricsText) else {
                throw ValidationError("--metrics-listen '\(metricsText)' is not HOST:PORT (example: 127.0.0.1:9400)")
            }
            metricsAddress = parsed
        }
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        var clusterKey: ClusterKey?
        if let keyFile {
            do {
                clusterKey = try ClusterKey(contentsOf: keyFile)
            } catch {
                throw ValidationError("--key-file: \(error)")
            }
        }
        guard let transportValue = Transport(rawValue: transport.lowercased()) else {
            throw ValidationError("--transport '\(transport)' is not tcp or udp")
        }
        return ServerSettings(listen: address, memoryBytes: bytes, metricsListen: metricsAddress, clusterKey: clusterKey,
                              transport: transportValue, logLevel: level)
    }

    func run() throws {
        throw ExitCode(Wiring.run(try settings()))
    }
}

/// Validated settings of one memx-server process.
struct ServerSettings {
    var listen: TCPAddress
    var memoryBytes: UInt64
    var metricsListen: TCPAddress?
    /// Clients must prove this key (AUTH); nil: no authentication.
    var clusterKey: ClusterKey?
    /// `.udp`: serve UDP too, on the same port number.
    var transport: Transport = .tcp
    var logLevel: Logger.Level
}
