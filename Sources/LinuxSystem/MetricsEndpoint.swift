import Glibc
import Synchronization

/// A tiny HTTP responder for Prometheus: `GET /metrics` answers `render()` in the text
/// exposition format (version 0.0.4); anything else is 404. One thread, one scrape at a time,
/// each connection closed after its answer: scrapes are rare and small. memx-server and
/// memx-vhost each serve their numbers through one (`--metrics-listen`).
public final class MetricsEndpoint: @unchecked Sendable {
    // SAFETY: `listener` is immutable and used only through thread-safe system calls (accept,
    // shutdown); the thread handle is behind a Mutex.
    /// A scrape may take this long to send its request and read the answer.
    public static let requestTimeoutMillis = 2_000
    /// Longest request head read (a scrape's is a few hundred bytes).
    public static let requestBytesMax = 8192

    /// The address actually bound (port 0 picks one).
    public let address: TCPAddress
    private let listener: TCPListener
    private let render: @Sendable () -> String
    private let thread = Mutex<OSThread?>(nil)
    private let stopping = Atomic<Bool>(false)

    public init(listen: TCPAddress, render: @escaping @Sendable () -> String) throws(Errno) {
        listener = try TCPListener(address: listen, backlog: 8)
        address = TCPAddress(host: listen.host, port: listener.port)
        self.render = render
    }

    /// Starts the responder's thread. Call once.
    public func start() throws(Errno) {
        let started = try OSThread(name: "memx-metrics") { [self] in serve() }
        thread.withLock { $0 = started }
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
                var nothing: [pollfd] = []
                _ = try? Poll.waitReadable(&nothing, timeoutMillis: 10)
            }
        }
    }

    private func answer(_ connection: borrowing TCPConnection) {
        try? connection.setTimeouts(receiveMillis: Self.requestTimeoutMillis, sendMillis: Self.requestTimeoutMillis)
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1024)
        let headEnd: [UInt8] = Array("\r\n\r\n".utf8)
        while request.count < Self.requestBytesMax, !(request.count >= 4 && Array(request.suffix(4)) == headEnd) {
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
        let body = found ? render() : "not found: try /metrics\n"
        let response = """
            HTTP/1.1 \(found ? "200 OK" : "404 Not Found")\r
            Content-Type: text/plain; version=0.0.4; charset=utf-8\r
            Content-Length: \(body.utf8.count)\r
            Connection: close\r
            \r
            \(body)
            """
        try? Array(response.utf8).withUnsafeBytes { bytes in try connection.send(bytes) }
    }
}

/// Builds a Prometheus text exposition: one `metric` call per metric family.
public struct PrometheusText {
    private var lines: [String] = []

    public init() {}

    public mutating func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: UInt64)]) {
        lines.append("# HELP \(name) \(help)")
        lines.append("# TYPE \(name) \(type)")
        for sample in samples { lines.append("\(name)\(sample.labels) \(sample.value)") }
    }

    public mutating func metric(_ name: String, _ type: String, _ help: String, _ value: UInt64) {
        metric(name, type, help, [(labels: "", value: value)])
    }

    public var text: String { lines.joined(separator: "\n") + "\n" }
}
