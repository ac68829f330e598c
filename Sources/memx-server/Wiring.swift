import LinuxSystem
import Logging
import MemoryServer
import RemoteMem

/// Starts the server from validated settings and runs it until a termination signal.
enum Wiring {
    /// Returns the process exit status.
    static func run(_ settings: ServerSettings) -> Int32 {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = settings.logLevel
            return handler
        }
        let logger = Logger(label: "memx-server")
        // Block the termination signals before any thread starts, so every thread inherits
        // the mask and only this thread sees them (through a signalfd).
        let signals: TerminationSignals
        do {
            signals = try TerminationSignals()
        } catch {
            logger.critical("cannot set up signal handling: \(error)")
            return 1
        }
        let server: MemoryServer
        let metrics: MetricsResponder?
        do {
            server = try MemoryServer(listen: settings.listen, memoryBytes: settings.memoryBytes,
                                      clusterKey: settings.clusterKey, transport: settings.transport, logger: logger)
            metrics = try settings.metricsListen.map { address throws(MemoryServerError) in
                try MetricsResponder(listen: address, server: server, logger: logger)
            }
            try server.start()
            try metrics?.start()
        } catch {
            logger.critical("\(error)")
            return 1
        }
        logger.info("""
            listening on \(server.address) (\(settings.transport == .udp ? "TCP and UDP" : "TCP")) with \(ByteSize.describe(settings.memoryBytes)) to lend \
            (\(server.store.arena.capacityFrames) frames of 4 KiB)\
            \(metrics.map { ", metrics on http://\($0.address)/metrics" } ?? ""), \
            \(settings.clusterKey == nil ? "no authentication (no --key-file)" : "clients must prove the cluster key")
            """)
        let signal = waitForSignal(signals)
        logger.info("stopping on signal \(signal)")
        metrics?.stop()
        server.stop()
        logger.info("stopped")
        return 0
    }

    /// Blocks until SIGTERM, SIGINT or SIGHUP; returns its number.
    private static func waitForSignal(_ signals: TerminationSignals) -> Int32 {
        while true {
            var fds = [Poll.readable(signals.descriptor.rawValue)]
            _ = try? Poll.waitReadable(&fds, timeoutMillis: -1)
            if let signal = signals.take() { return signal }
        }
    }
}
