import ArgumentParser
import Glibc

// Exit status: 0 done, 1 an operational error (one line on stderr), 2 bad flags (one line on
// stderr; ArgumentParser's default is 64 and a usage dump). --help prints in full and exits 0.
do {
    var command = try MemxctlCommand.parseAsRoot()
    try command.run()
} catch let failure as CommandFailure {
    Standard.error("memxctl: \(failure.message)")
    exit(1)
} catch {
    if MemxctlCommand.exitCode(for: error) == .success {
        print(MemxctlCommand.fullMessage(for: error))
        exit(0)
    }
    if let exitCode = error as? ExitCode { exit(exitCode.rawValue) }
    let message = MemxctlCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
    Standard.error("memxctl: \(message)")
    exit(2)
}
