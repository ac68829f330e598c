import Glibc
import LinuxSystem
import Logging

/// A vhost-user backend listening on a unix socket: accepts one frontend at a time, serves it
/// until it disconnects, then waits for the next (a restarted or reconnecting QEMU), until a
/// termination signal arrives.
public struct VhostUserServer: ~Copyable {
    private let listener: UnixListener
    private let device: any VhostUserDevice
    private let logger: Logger
    private let pollMicroseconds: Int

    /// Binds `socketPath` (replacing a stale socket left by a killed process). Queue threads
    /// busy-poll an empty ring for `pollMicroseconds` before sleeping (0 = never poll).
    public init(socketPath: String, device: any VhostUserDevice, pollMicroseconds: Int = 0,
                logger: Logger) throws(Errno) {
        listener = try UnixListener(path: socketPath)
        self.device = device
        self.pollMicroseconds = pollMicroseconds
        self.logger = logger
    }

    /// Serves frontends until `signals` fires; then stops every queue (draining in-flight
    /// requests) and removes the socket file. Returns the signal number.
    public func run(until signals: TerminationSignals) -> Int32 {
        defer { listener.unlinkPath() }
        var fds = [Poll.readable(listener.descriptor.rawValue), Poll.readable(signals.descriptor.rawValue)]
        while true {
            do {
                _ = try Poll.waitReadable(&fds, timeoutMillis: -1)
            } catch {
                logger.error("poll failed: \(error)")
                return 0
            }
            if fds[1].revents != 0 { return signals.take() ?? 0 }
            guard fds[0].revents != 0 else { continue }
            let connection: UnixConnection
            do {
                connection = try listener.accept()
            } catch {
                logger.warning("accept failed: \(error)")
                continue
            }
            logger.info("frontend connected")
            var control = ControlConnection(connection: connection, device: device,
                                            pollMicroseconds: pollMicroseconds, logger: logger)
            if control.serve(stop: signals.descriptor.rawValue) {
                return signals.take() ?? 0
            }
        }
    }
}
