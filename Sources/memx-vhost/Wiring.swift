import BlockDevice
import Glibc
import LinuxSystem
import Logging
import RemoteMem
import VhostUser

/// Builds the backend from validated settings and runs it until a termination signal.
enum Wiring {
    /// Returns the process exit status.
    static func run(_ settings: Settings) -> Int32 {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = settings.logLevel
            return handler
        }
        var logger = Logger(label: "memx-vhost")
        logger[metadataKey: "volume"] = .string(settings.volume)
        // Block the termination signals before any thread starts, so every thread inherits
        // the mask and only the control loop sees them (through a signalfd).
        let signals: TerminationSignals
        do {
            signals = try TerminationSignals()
        } catch {
            logger.critical("cannot set up signal handling: \(error)")
            return 1
        }
        let device: MemxBlockDevice
        let storeDescription: String
        if settings.servers.isEmpty {
            do {
                let pool = try SharedMemoryPageStore(directory: settings.poolDirectory, volume: settings.volume,
                                                     capacityBytes: settings.device.capacityBytes)
                device = MemxBlockDevice(configuration: settings.device, store: pool, logger: logger)
                storeDescription = "embedded pool \(pool.path), \(ByteSize.describe(pool.residentBytes)) resident"
            } catch {
                logger.critical("cannot open the embedded pool: \(error)")
                return 1
            }
        } else {
            do {
                let leased = try LeasedPageStore(
                    servers: settings.servers, volume: settings.volume, capacityBytes: settings.device.capacityBytes,
                    options: .init(cacheBytes: settings.cacheBytes, writeThrough: settings.writeThrough,
                                   connection: ServerConnection.Options(clusterKey: settings.clusterKey, transport: settings.transport),
                                   cacheDirectory: settings.poolDirectory, replicas: settings.replicas,
                                   deduplicate: settings.deduplicate,
                                   report: { [logger] event in
                                       switch event.kind {
                                       case .problem: logger.warning("\(event.message)")
                                       case .progress: logger.notice("\(event.message)")
                                       }
                                   }),
                    standby: settings.standby, hotPageHandoff: settings.hotPageHandoff)
                if let remote = leased.serving { reportRecovery(remote, logger: logger) }
                device = MemxBlockDevice(configuration: settings.device, leased: leased, logger: logger)
                let lease = leased.serving.map { "lease epoch \($0.volume.epoch)" }
                    ?? "standby: the lease is taken when QEMU starts the rings"
                storeDescription = """
                    \(settings.servers.count) memory server(s) \(settings.servers.map(\.description).joined(separator: " ")), \
                    \(settings.replicas) replica(s) per page, \(lease), \(ByteSize.describe(settings.cacheBytes)) cache in \(settings.poolDirectory), \
                    \(settings.writeThrough ? "write-through" : "write-back")\
                    \(settings.clusterKey == nil ? "" : ", cluster key proved")
                    """
            } catch {
                logger.critical("cannot open volume '\(settings.volume)' on the memory servers: \(error)")
                return 1
            }
        }
        let server: VhostUserServer
        do {
            server = try VhostUserServer(socketPath: settings.socketPath, device: device,
                                         pollMicroseconds: settings.pollMicroseconds, logger: logger)
        } catch {
            logger.critical("cannot listen on \(settings.socketPath): \(error)")
            return 1
        }
        var metrics: MetricsEndpoint?
        if let address = settings.metricsListen {
            do {
                metrics = try MetricsEndpoint(listen: address) { VhostMetrics.exposition(device: device) }
                try metrics?.start()
            } catch {
                logger.critical("cannot serve metrics on \(address): \(error)")
                return 1
            }
        }
        defer { metrics?.stop() }
        logger.info("""
            serving \(ByteSize.describe(settings.device.capacityBytes)) disk on \(settings.socketPath) \
            (\(storeDescription), \(settings.device.queueCount) queues\(settings.device.readOnly ? ", read-only" : "")\
            \(metrics.map { ", metrics on http://\($0.address)/metrics" } ?? ""))
            """)
        let signal = server.run(until: signals)
        if let leased = device.leased, let error = leased.close() {
            logger.error("stopping on signal \(signal): the final write-back failed: \(error)")
            return 1
        }
        logger.info("stopping on signal \(signal); socket removed")
        return 0
    }

    /// Logs what the cache file a crashed predecessor left held.
    private static func reportRecovery(_ remote: RemotePageStore, logger: Logger) {
        let memory = remote.cache.memory
        if memory.discardedPages > 0 {
            logger.error("""
                dropped \(memory.discardedPages) dirty pages a previous memx-vhost left in \
                \(memory.path ?? "its cache") under lease epoch \(memory.previousEpoch): \
                another backend has held the volume since (this one has epoch \(remote.volume.epoch)), \
                so they are older than its data; the guest never had them flushed
                """)
        }
        if memory.recoveredPages > 0 {
            logger.notice("wrote back \(memory.recoveredPages) dirty pages a previous memx-vhost left in \(memory.path ?? "its cache")")
        }
    }
}
