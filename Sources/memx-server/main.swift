import ArgumentParser
import Glibc

// Bad flags exit with status 2 and a one-line reason (ArgumentParser's default is 64 and a
// usage dump); --help still prints in full and exits 0.
do {
    let command = try MemxServerCommand.parse()
    _ = try command.settings()
    try command.run()
} catch {
    let code = MemxServerCommand.exitCode(for: error)
    if code == .success {
        print(MemxServerCommand.fullMessage(for: error))
        exit(0)
    }
    if let exitCode = error as? ExitCode {
        exit(exitCode.rawValue)
    }
    let message = MemxServerCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    let line = "memx-server: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
