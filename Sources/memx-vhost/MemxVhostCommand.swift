import ArgumentParser
import BlockDevice
import LinuxSystem
import Logging
import RemoteMem

/// The `memx-vhost` command line: parsing and validation only; `Wiring` builds the backend.
struct MemxVhostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memx-vhost",
        abstract: "Serve a MemX memory-backed disk to QEMU as a vhost-user-blk device.",
        discussion: """
            memx-vhost listens on a unix socket for one QEMU (vhost-user-blk-pci) at a time and \
            serves the disk's blocks from memory. With --server it keeps the volume's pages on \
            memx-server processes (other hosts' RAM) behind a local page cache; the volume is \
            created on first use and found again by name. With no memory servers it uses the \
            embedded pool: a sparse file in shared memory (/dev/shm/memx-VOLUME.pool) that \
            outlives this process, so a restarted memx-vhost serves the same disk. Unwritten \
            blocks cost no memory; DISCARD and WRITE_ZEROES give memory back.

            It runs in the foreground and logs to stderr. SIGTERM or SIGINT stop it cleanly: \
            in-flight requests complete and the socket file is removed. When QEMU disconnects \
            it keeps listening for the next connection (QEMU's reconnect=).

            Attach QEMU (guest RAM must be shared memory):
              qemu-system-x86_64 ... \\
                -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\
                -chardev socket,id=memx0,path=SOCKET,reconnect=1 \\
                -device vhost-user-blk-pci,chardev=memx0

            Exit status: 0 after a clean stop, 1 on a runtime error, 2 on bad flags.
            """)

    @Option(name: [.customLong("socket"), .customLong("socket-path")],
            help: ArgumentHelp("Unix socket path to listen on (a stale socket file is replaced).", valueName: "path"))
    var socket: String?

    @Option(help: ArgumentHelp("Disk size, with optional K/M/G/T suffix (binary units); a multiple of 4 KiB.",
                               valueName: "size"))
    var size: String?

    @Option(help: ArgumentHelp("Volume name (letters, digits, '.', '_', '-'); default: from the socket file name.",
                               valueName: "name"))
    var volume: String?

    @Option(help: ArgumentHelp("Queues offered to QEMU (GET_QUEUE_NUM); the guest uses up to one per vCPU.",
                               valueName: "n"))
    var queues: Int = 16

    @Option(name: .customLong("server"),
            help: ArgumentHelp("""
                A memory server HOST:PORT (or [IPv6]:PORT) holding the volume's pages; repeat for a \
                pool. None: the embedded shared-memory pool.
                """, valueName: "host:port"))
    var servers: [String] = []

    @Option(help: ArgumentHelp("Page cache size with memory servers (K/M/G/T), at least 1M.", valueName: "size"))
    var cache: String?

    @Option(help: ArgumentHelp("""
        The memory servers' cluster key (16 to 4096 bytes, mode 600): proved to every --server, \
        which must prove it back, on every connect and reconnect. Needs --server.
        """, valueName: "file"))
    var keyFile: String?

    @Option(help: ArgumentHelp("""
        How to reach the --server memory servers: tcp (default) or udp (one datagram per frame, \
        a page per datagram, retransmission and a loss-adaptive window; the servers need \
        --transport udp). Needs --server.
        """, valueName: "tcp|udp"))
    var transport: String = "tcp"

    @Option(help: ArgumentHelp("""
        With memory servers: copies of every page, each on another server (1 to 4, at most the \
        number of servers). A write completes once every healthy copy has it; a read that fails \
        on one server is served by another at once; copies lost with a server are made again on \
        the others. Fixed when the volume is created. Default: 2 with two or more servers, else 1.
        """, valueName: "n"))
    var replicas: Int?

    @Flag(help: """
        With memory servers: complete a write only once the servers acknowledged it (slower \
        writes; the cache then never holds data the servers lack).
        """)
    var writeThrough = false

    @Flag(help: """
        With memory servers: complete a write once it is in the page cache and write it back in \
        the background; FLUSH waits for the servers. The default. The cache is a file in \
        --pool-directory that outlives the process: after a kill -9 the next memx-vhost for the \
        volume writes its dirty pages back before serving.
        """)
    var writeBack = false

    @Flag(help: "Offer a read-only disk (VIRTIO_BLK_F_RO); writes fail with an I/O error.")
    var readOnly = false

    @Flag(help: """
        With memory servers: a live-migration destination. Check that the volume exists with \
        --size, answer QEMU's handshake, and take the volume's lease only when QEMU starts the \
        rings (when the VM starts here). Start it before `migrate`, on the destination QEMU's socket.
        """)
    var standby = false

    @Flag(inversion: .prefixedNo, help: """
        With memory servers, on a live migration: the source leaves the list of pages in its \
        cache on the servers at the switchover, and the destination fetches them into its cache \
        in the background as soon as it takes the volume. On by default.
        """)
    var hotPageHandoff = true

    @Flag(help: """
        With memory servers: create the volume with de-duplication off (its pages never share \
        frames with other volumes' identical pages). Only when the volume is created; an existing \
        volume keeps its policy (memxctl stat shows it).
        """)
    var noDedup = false

    @Option(help: ArgumentHelp("Serial number the guest reads (at most 20 bytes); default: the volume name.",
                               valueName: "id"))
    var serial: String?

    @Option(help: ArgumentHelp("Log level: trace, debug, info, notice, warning, error or critical.", valueName: "level"))
    var logLevel: String = "info"

    @Option(help: ArgumentHelp("""
        Busy-poll window in microseconds: after a queue runs empty its thread keeps watching it \
        this long before sleeping, so back-to-back requests need no kick and no wake-up \
        (like QEMU's poll-max-ns). 0 disables polling; at most 1000.
        """, valueName: "us"))
    var pollUs: Int = 32

    @Option(help: ArgumentHelp("""
        Serve Prometheus text metrics at http://ADDRESS/metrics: I/O errors, the page cache, \
        servers down or draining, re-replication progress.
        """, valueName: "address"))
    var metricsListen: String?

    @Option(help: ArgumentHelp("Directory of the embedded pool's files and of the memory servers' cache file (a tmpfs).",
                               valueName: "dir"))
    var poolDirectory: String = "/dev/shm"

    @Flag(help: "Print the backend's capabilities as JSON (QEMU's vhost-user backend convention) and exit.")
    var printCapabilities = false

    /// The validated settings, or a one-line reason.
    func settings() throws(ValidationError) -> Settings {
        guard let socket, !socket.isEmpty else { throw ValidationError("--socket is required") }
        guard let sizeText = size else { throw ValidationError("--size is required") }
        guard let bytes = ByteSize(parsing: sizeText)?.bytes else {
            throw ValidationError("--size '\(sizeText)' is not a size (examples: 512M, 1G, 4096)")
        }
        guard let level = Logger.Level(rawValue: logLevel.lowercased()) else {
            throw ValidationError("--log-level '\(logLevel)' is not one of trace, debug, info, notice, warning, error, critical")
        }
        let volumeName = volume ?? Settings.volumeName(fromSocket: socket)
        guard Settings.isValidVolumeName(volumeName) else {
            throw ValidationError("--volume '\(volumeName)' must be 1–64 letters, digits, '.', '_' or '-' and not start with '.'")
        }
        let device = BlockDeviceConfiguration(capacityBytes: bytes, queueCount: queues, readOnly: readOnly,
                                              serial: serial ?? String(volumeName.prefix(BlockDeviceConfiguration.serialBytesMax)))
        guard (0...1000).contains(pollUs) else { throw ValidationError("--poll-us must be between 0 and 1000") }
        var addresses: [TCPAddress] = []
        for text in servers {
            guard let address = TCPAddress(parsing: text) else {
                throw ValidationError("--server '\(text)' is not HOST:PORT (an IP address and a port)")
            }
            guard !addresses.contains(address) else { throw ValidationError("--server \(text) is given twice") }
            addresses.append(address)
        }
        if addresses.isEmpty && (cache != nil || writeThrough || writeBack) {
            throw ValidationError("--cache, --write-through and --write-back need at least one --server")
        }
        if addresses.isEmpty && noDedup {
            throw ValidationError("--no-dedup needs at least one --server (the embedded pool does not de-duplicate)")
        }
        if addresses.isEmpty && standby {
            throw ValidationError("--standby needs at least one --server (the embedded pool cannot move to another host)")
        }
        if addresses.isEmpty && replicas != nil {
            throw ValidationError("--replicas needs at least one --server")
        }
        let replicaCount = replicas ?? min(2, max(1, addresses.count))
        guard addresses.isEmpty || (1...min(4, addresses.count)).contains(replicaCount) else {
            throw ValidationError("--replicas \(replicaCount) must be between 1 and \(min(4, addresses.count)) (one copy per --server, at most 4)")
        }
        if addresses.isEmpty && keyFile != nil {
            throw ValidationError("--key-file needs at least one --server (the embedded pool has no servers to authenticate)")
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
        if addresses.isEmpty && transportValue == .udp {
            throw ValidationError("--transport udp needs at least one --server")
        }
        if writeThrough && writeBack { throw ValidationError("--write-through and --write-back exclude each other") }
        var metricsAddress: TCPAddress?
        if let metricsListen {
            guard let parsed = TCPAddress(parsing: metricsListen) else {
                throw ValidationError("--metrics-listen '\(metricsListen)' is not HOST:PORT (example: 127.0.0.1:9401)")
            }
            metricsAddress = parsed
        }
        var cacheBytes: UInt64 = RemotePageStore.Options().cacheBytes
        if let cache {
            guard let bytes = ByteSize(parsing: cache)?.bytes, bytes >= PageCacheLimits.capacityBytesMin else {
                throw ValidationError("--cache '\(cache)' is not a size of at least 1M")
            }
            cacheBytes = bytes
        }
        if let why = device.validationError() { throw ValidationError("--\(Self.flag(for: why)) \(why)") }
        return Settings(socketPath: socket, volume: volumeName, poolDirectory: poolDirectory, device: device,
                        servers: addresses, clusterKey: clusterKey, transport: transportValue, replicas: replicaCount,
                        cacheBytes: cacheBytes, writeThrough: writeThrough, standby: standby, hotPageHandoff: hotPageHandoff, deduplicate: !noDedup, metricsListen: metricsAddress,
                        pollMicroseconds: pollUs, logLevel: level)
    }

    private static func flag(for reason: String) -> String {
        reason.hasPrefix("size") ? "size:" : reason.hasPrefix("queues") ? "queues:" : "serial:"
    }

    func run() throws {
        if printCapabilities {
            print(#"{"type": "block", "features": ["read-only"]}"#)
            return
        }
        let settings: Settings
        do {
            settings = try self.settings()
        } catch {
            throw error
        }
        throw ExitCode(Wiring.run(settings))
    }
}

/// Validated settings of one memx-vhost process.
struct Settings {
    var socketPath: String
    var volume: String
    var poolDirectory: String
    var device: BlockDeviceConfiguration
    /// Memory servers; empty = the embedded pool.
    var servers: [TCPAddress]
    /// The key every server connection proves (and expects proved back); nil: none.
    var clusterKey: ClusterKey?
    /// TCP or UDP to the servers (`--transport`).
    var transport: Transport
    /// Copies of every page group (1 with the embedded pool).
    var replicas: Int
    var cacheBytes: UInt64
    var writeThrough: Bool
    /// Wait for the rings to start before taking the volume's lease (a migration destination).
    var standby: Bool
    /// Leave and use the cache's hot-page list at a migration (`--[no-]hot-page-handoff`).
    var hotPageHandoff: Bool
    /// Create the volume with de-duplication on (`--no-dedup`: off).
    var deduplicate: Bool
    /// Where to serve Prometheus metrics; nil: nowhere.
    var metricsListen: TCPAddress?
    var pollMicroseconds: Int
    var logLevel: Logger.Level

    /// `/run/memx/vol1.sock` → `vol1`.
    static func volumeName(fromSocket path: String) -> String {
        var name = Substring(path.split(separator: "/").last ?? "memx")
        if name.hasSuffix(".sock") { name = name.dropLast(5) }
        let cleaned = String(name.map { isAllowed($0) ? $0 : "-" })
        return cleaned.isEmpty || cleaned.hasPrefix(".") ? "memx" + cleaned : String(cleaned.prefix(64))
    }

    static func isValidVolumeName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 64 && !name.hasPrefix(".") && name.allSatisfy(isAllowed)
    }

    private static func isAllowed(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "." || c == "_" || c == "-")
    }
}

extension MemxVhostCommand {
    /// Validates flags before anything starts (so bad flags never touch the pool or socket).
    mutating func settingsCheckIfNeeded() throws(ValidationError) {
        if !printCapabilities { _ = try settings() }
    }
}
