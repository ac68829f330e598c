import Foundation

/// The built `memxctl` binary for integration tests: finding it, and running it once with its
/// stdout and stderr captured apart (so `--json` output can be parsed as is).
public enum MemxctlProcess {
    /// What one run of memxctl did.
    public struct Outcome: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// The memxctl binary: `MEMXCTL_BINARY`; else the one beside `ServerProcess.binaryPath()`
    /// (same build directory, whatever the scratch path); else `.build/debug/memxctl` of this
    /// package.
    public static func binaryPath() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        if let path = environment["MEMXCTL_BINARY"], !path.isEmpty { return path }
        var candidates: [String] = []
        if let server = try? ServerProcess.binaryPath() {
            candidates.append(URL(fileURLWithPath: server).deletingLastPathComponent().appendingPathComponent("memxctl").path)
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates += [".build/debug/memxctl", ".build/release/memxctl"].map { root.appendingPathComponent($0).path }
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw BackendProcessError("memxctl binary not found: run `swift build` first or set MEMXCTL_BINARY")
    }

    /// Runs `memxctl ARGUMENTS...` to completion (killed after `timeoutSeconds`, which throws).
    public static func run(_ arguments: [String], timeoutSeconds: Double = 10) throws -> Outcome {
        let base = NSTemporaryDirectory() + "memxctl-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let outPath = base + ".out"
        let errPath = base + ".err"
        for path in [outPath, errPath] { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        defer { for path in [outPath, errPath] { try? FileManager.default.removeItem(atPath: path) } }
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try binaryPath())
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while process.isRunning && Date() < deadline { usleep(5_000) }
        func read(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw BackendProcessError("memxctl \(arguments.joined(separator: " ")) timed out after \(timeoutSeconds) s: \(read(errPath))")
        }
        return Outcome(status: process.terminationStatus, stdout: read(outPath), stderr: read(errPath))
    }
}
