import ArgumentParser
import Glibc

// Bad flags exit with status 2 and a one-line reason (ArgumentParser's default is 64 and a
// usage dump); --help and --version still print in full and exit 0.
do {
    var command = try MemxVhostCommand.parse()
    try command.settingsCheckIfNeeded()
    try command.run()
} catch {
    let code = MemxVhostCommand.exitCode(for: error)
    if code == .success {
        print(MemxVhostCommand.fullMessage(for: error))
        exit(0)
    }
    if let exitCode = error as? ExitCode {
        exit(exitCode.rawValue)
    }
    let message = MemxVhostCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    let line = "memx-vhost: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
