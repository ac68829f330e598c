import Glibc
import LinuxSystem
import Logging
import RemoteMem
import Synchronization

/// A tiny HTTP responder for Prometheus: `GET /metrics` answers the server's numbers in the
/// text exposition format (version 0.0.4); anything else is 404. One thread, one scrape at a
/// time, each connection closed after its answer: scrapes are rare and small.
public final class MetricsResponder: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `listener` is immutable and used only through thread-safe
    // system calls (accept, shutdown); the thread handle is behind a Mutex.
    /// The address actually bound.
    public let address: TCPAddress
    private let listener: TCPListener
    private let server: MemoryServer
    private let logger: Logger
    private let thread = Mutex<OSThread?>(nil)
    private let stopping = Atomic<Bool>(false)

    public init(listen: TCPAddress, server: MemoryServer, logger: Logger) throws(MemoryServerError) {
        do {
            listener = try TCPListener(address: listen, backlog: 8)
        } catch {
            throw .system("cannot listen for metrics on \(listen)", error)
        }
        address = TCPAddress(host: listen.host, port: listener.port)
        self.server = server
        self.logger = logger
    }

    /// Starts the responder's thread. Call once.
    public func start() throws(MemoryServerError) {
        do {
            let started = try OSThread(name: "memx-metrics") { [self] in serve() }
            thread.withLock { $0 = started }
        } catch {
            throw .system("cannot start the metrics thread", error)
        }
    }

    /// Stops answering and joins the thread. Idempotent.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        listener.shutdown()
        thread.withLock { $0 }?.join()
    }

    private func serve() {
        while !stopping.load(ordering: .relaxed) {
            do {
                let connection = try listener.accept()
                answer(connection)
            } catch {
                guard !stopping.load(ordering: .relaxed) else { return }
                logger.warning("metrics accept failed: \(error)")
                var nothing: [pollfd] = []
                _ = try? Poll.waitReadable(&nothing, timeoutMillis: 10)
            }
        }
    }

    private func answer(_ connection: borrowing TCPConnection) {
        try? connection.setTimeouts(receiveMillis: MemoryServerLimits.metricsRequestTimeoutMillis,
                                    sendMillis: MemoryServerLimits.metricsRequestTimeoutMillis)
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
        while request.count < MemoryServerLimits.metricsRequestBytesMax, !request.ends(with: headEnd) {
            let received: Int
            do {
                received = try chunk.withUnsafeMutableBytes { bytes in try connection.receiveSome(into: bytes) }
            } catch {
                return
            }
            guard received > 0 else { return }
            request.append(contentsOf: chunk[0..<received])
        }
        let firstLine = String(decoding: request.prefix { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
        let found = firstLine.hasPrefix("GET /metrics ") || firstLine == "GET /metrics"
        let body = found ? Self.exposition(server) : "not found: try /metrics\n"
        let response = """
            HTTP/1.1 \(found ? "200 OK" : "404 Not Found")\r
            Content-Type: text/plain; version=0.0.4; charset=utf-8\r
            Content-Length: \(body.utf8.count)\r
            Connection: close\r
            \r
            \(body)
            """
        do {
            try Array(response.utf8).withUnsafeBytes { bytes in try connection.send(bytes) }
        } catch {
            logger.debug("metrics scrape not answered: \(error)")
        }
    }

    /// The server's numbers in the Prometheus text format.
    public static func exposition(_ server: MemoryServer) -> String {
        let arena = server.store.arena
        let counters = server.counters
        var lines: [String] = []
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: UInt64)]) {
            lines.append("# HELP \(name) \(help)")
            lines.append("# TYPE \(name) \(type)")
            for sample in samples { lines.append("\(name)\(sample.labels) \(sample.value)") }
        }
        let frameBytes = UInt64(PageArena.frameBytes)
        metric("memx_server_capacity_bytes", "gauge", "Memory this server lends at most.",
               [("", UInt64(arena.capacityFrames) * frameBytes)])
        metric("memx_server_used_bytes", "gauge", "Memory holding pages now.", [("", UInt64(arena.usedFrames) * frameBytes)])
        metric("memx_server_frames_capacity", "gauge", "4 KiB frames this server lends at most.",
               [("", UInt64(arena.capacityFrames))])
        metric("memx_server_frames_used", "gauge", "4 KiB frames holding pages now.", [("", UInt64(arena.usedFrames))])
        metric("memx_server_volumes", "gauge", "Volumes held.", [("", UInt64(server.store.volumeCount))])
        metric("memx_server_connections", "gauge", "Open client connections.", [("", UInt64(counters.connectionsOpen))])
        let byOpcode = ServerCounters.allOpcodes.map { (labels: "{opcode=\"\($0)\"}", value: counters.requests(for: $0)) }
            + [(labels: "{opcode=\"unknown\"}", value: counters.requests(for: nil))]
        metric("memx_server_requests_total", "counter", "Requests answered, by opcode.", byOpcode)
        metric("memx_server_received_bytes_total", "counter", "Request bytes received, headers included.",
               [("", counters.bytesReceived)])
        metric("memx_server_sent_bytes_total", "counter", "Reply bytes sent, headers included.", [("", counters.bytesSent)])
        metric("memx_server_auth_failures_total", "counter", "AUTH requests refused (another key, or a replayed proof).",
               [("", counters.authenticationFailures)])
        return lines.joined(separator: "\n") + "\n"
    }
}

extension Array where Element == UInt8 {
    fileprivate func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
