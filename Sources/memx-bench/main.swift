import ArgumentParser
import Glibc

// memx-bench: parse the flags (bad flags exit 2 with one line), run, and print the table (row
// by row, as workloads finish) or the JSON report. Everything else lives in BenchRun and the
// VhostUser frontend.

let command: BenchCommand
do {
    command = try BenchCommand.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    if BenchCommand.exitCode(for: error) == .success {
        print(BenchCommand.fullMessage(for: error))
        exit(0)
    }
    let message = BenchCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "bad arguments"
    StandardError.line("memx-bench: \(message) (see --help)")
    exit(2)
}

do throws(BenchError) {
    let settings = try command.settings()
    var run = BenchRun(settings: settings)
    var rowsPrinted = 0
    if !settings.json {
        run.onResult = { report, result in
            if rowsPrinted == 0 { print(report.tableHeader()) }
            print(report.tableRow(result))
            rowsPrinted += 1
        }
    }
    let report = try run.execute()
    if settings.json { print(report.json()) }
} catch {
    StandardError.line("memx-bench: \(error)")
    exit(error.exitCode)
}
