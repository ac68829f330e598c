import Foundation

/// A real `memx-vhost` process for integration tests: started with the built binary, its
/// stderr captured to a log file, stopped with a signal. Tests drive it through its socket.
public final class BackendProcess: @unchecked Sendable {
    // SAFETY: used from one test at a time; Process is only touched by that test's thread.
    public let socketPath: String
    public let logPath: String
    public let arguments: [String]
    public let process: Process
    private let logHandle: FileHandle

    /// The memx-vhost binary: `MEMX_VHOST_BINARY`, else `.build/debug/memx-vhost` of this package.
    public static func binaryPath() throws -> String {
        if let path = ProcessInfo.processInfo.environment["MEMX_VHOST_BINARY"], !path.isEmpty { return path }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        for candidate in [".build/debug/memx-vhost", ".build/release/memx-vhost"] {
            let path = root.appendingPathComponent(candidate).path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        throw BackendProcessError("memx-vhost binary not found: run `swift build` first or set MEMX_VHOST_BINARY")
    }

    /// A fresh directory for one test's sockets and logs.
    public static func temporaryDirectory(_ name: String) throws -> String {
        let path = NSTemporaryDirectory() + "memx-test-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Starts `memx-vhost --socket SOCKET ARGS...` and waits (up to 10 s) for its socket.
    public init(socketPath: String, arguments: [String], logPath: String? = nil) throws {
        self.socketPath = socketPath
        self.arguments = ["--socket", socketPath] + arguments
        self.logPath = logPath ?? socketPath + ".log"
        _ = FileManager.default.createFile(atPath: self.logPath, contents: nil)
        logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: self.logPath))
        logHandle.seekToEndOfFile()
        process = Process()
        process.executableURL = URL(fileURLWithPath: try Self.binaryPath())
        process.arguments = self.arguments
        process.standardError = logHandle
        process.standardOutput = logHandle
        try? FileManager.default.removeItem(atPath: socketPath)
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        // The file appears at bind(), a moment before listen(): wait until the kernel lists
        // the socket as listening, or a connect in between is refused.
        while !Self.isListening(socketPath) {
            guard process.isRunning else {
                throw BackendProcessError("memx-vhost exited with \(process.terminationStatus) before listening: \(log)")
            }
            guard Date() < deadline else { throw BackendProcessError("memx-vhost did not listen within 10 s: \(log)") }
            usleep(10_000)
        }
    }

    /// True if a unix socket bound at `path` is listening (`/proc/net/unix`, state flag
    /// `__SO_ACCEPTCON` = 0x10000).
    public static func isListening(_ path: String) -> Bool {
        guard let table = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8) else { return false }
        for line in table.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count >= 8, fields.last.map(String.init) == path, fields[3] == "00010000" { return true }
        }
        return false
    }

    /// Sends `signal` and waits for the process to exit (up to 10 s); returns its status.
    @discardableResult
    public func stop(signal: Int32 = SIGTERM) throws -> Int32 {
        defer { try? logHandle.close() }
        return try stopProcess(process, name: "memx-vhost", signal: signal)
    }

    /// Everything the backend logged so far.
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Sends `signal` to `process` and waits (up to 10 s) for it to exit; returns its status. A
/// process still running then is killed and reported.
func stopProcess(_ process: Process, name: String, signal: Int32) throws -> Int32 {
    if process.isRunning { kill(process.processIdentifier, signal) }
    let deadline = Date().addingTimeInterval(10)
    while process.isRunning {
        guard Date() < deadline else {
            kill(process.processIdentifier, SIGKILL)
            throw BackendProcessError("\(name) did not exit within 10 s of signal \(signal)")
        }
        usleep(5_000)
    }
    return process.terminationStatus
}

public struct BackendProcessError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Runs a command to completion with a timeout, capturing stdout and stderr together.
public func runCommand(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       timeoutSeconds: Double) throws -> (status: Int32, output: String) {
    let outputPath = NSTemporaryDirectory() + "memx-cmd-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log"
    _ = FileManager.default.createFile(atPath: outputPath, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: outputPath) }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    let deadline = Date().addingTimeInterval(timeoutSeconds)
    while process.isRunning && Date() < deadline { usleep(20_000) }
    if process.isRunning {
        kill(-process.processIdentifier, SIGKILL)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? handle.close()
        let output = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        throw BackendProcessError("\(executable) \(arguments.joined(separator: " ")) timed out after \(timeoutSeconds) s:\n\(output.suffix(3000))")
    }
    try? handle.close()
    return (process.terminationStatus, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
}
