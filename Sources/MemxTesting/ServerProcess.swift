import Foundation

/// A real `memx-server` process for integration tests: started with the built binary on
/// 127.0.0.1 port 0, its stderr captured to a log file, its port read from the log line it
/// prints at start ("listening on 127.0.0.1:PORT"), stopped with a signal.
public final class ServerProcess: @unchecked Sendable {
    // SAFETY: used from one test at a time; Process is only touched by that test's thread.
    public let logPath: String
    public let process: Process
    /// The port the server listens on.
    public let port: UInt16
    private let logHandle: FileHandle

    /// The memx-server binary: `MEMX_SERVER_BINARY`; else the one beside the running test
    /// bundle (same build directory, whatever the scratch path); else beside `MEMX_VHOST_BINARY`;
    /// else `.build/debug/memx-server` of this package.
    public static func binaryPath() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["MEMX_SERVER_BINARY"], !path.isEmpty { return path }
        var candidates: [String] = []
        if let executable = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append(URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("memx-server").path)
        }
        if let vhost = environment["MEMX_VHOST_BINARY"], !vhost.isEmpty {
            candidates.append(URL(fileURLWithPath: vhost).deletingLastPathComponent().appendingPathComponent("memx-server").path)
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates += [".build/debug/memx-server", ".build/release/memx-server"].map { root.appendingPathComponent($0).path }
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw BackendProcessError("memx-server binary not found: run `swift build` first or set MEMX_SERVER_BINARY")
    }

    /// Starts `memx-server --listen 127.0.0.1:PORT ARGS...` (port 0: any free one) and waits
    /// (up to 10 s) for the line that names its port.
    public init(arguments: [String], logPath: String, port: UInt16 = 0) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binaryPath())
        process.arguments = ["--listen", "127.0.0.1:\(port)"] + arguments
        process.standardError = logHandle
        process.standardOutput = logHandle
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        var found: UInt16?
        while found == nil {
            found = Self.listeningPort(in: Self.read(logPath))
            if found != nil { break }
            guard process.isRunning else {
                throw BackendProcessError("memx-server exited with \(process.terminationStatus) before listening: \(Self.read(logPath))")
            }
            guard Date() < deadline else { throw BackendProcessError("memx-server did not listen within 10 s: \(Self.read(logPath))") }
            usleep(10_000)
        }
        self.port = found!
    }

    /// The port in the "listening on HOST:PORT" line, if logged yet.
    public static func listeningPort(in log: String) -> UInt16? {
        guard let range = log.range(of: "listening on ") else { return nil }
        let address = log[range.upperBound...].prefix { !$0.isWhitespace }
        guard let colon = address.lastIndex(of: ":") else { return nil }
        return UInt16(address[address.index(after: colon)...])
    }

    /// Sends `signal` and waits for the process to exit (up to 10 s); returns its status.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM) throws -> Int32 {
        defer { try? logHandle.close() }
        return try stopProcess(process, name: "memx-server", signal: signal)
    }

    /// Everything the server logged so far.
    public var log: String { Self.read(logPath) }

    private static func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
