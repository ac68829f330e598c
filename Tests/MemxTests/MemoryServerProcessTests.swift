import Foundation
import MemxTesting
import RemoteMem
import Testing

/// The real `memx-server` binary: it starts on a port the kernel picks and says which, answers
/// over the wire, stops cleanly on SIGTERM and SIGINT, and refuses bad flags with one line and
/// status 2.
@Suite("memx-server process")
struct MemoryServerProcessTests {
    @Test("starts on port 0, logs its port, answers HELLO and PING, exits 0 on SIGTERM and SIGINT")
    func startPingStop() throws {
        let directory = try BackendProcess.temporaryDirectory("server")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for signal in [SIGTERM, SIGINT] {
            let server = try ServerProcess(arguments: ["--memory", "16M", "--log-level", "debug"],
                                           logPath: directory + "/server-\(signal).log")
            #expect(server.port != 0)
            let client = try WireClient(port: server.port)
            #expect(try client.call(.ping, payload: [1, 2, 3]).payload == [1, 2, 3])
            let stat = try client.serverStat()
            #expect(stat.capacityFrames == 4096 && stat.usedFrames == 0 && stat.connections == 1)
            #expect(try server.stop(signal: signal) == 0, "\(server.log)")
            #expect(server.log.contains("16 MiB to lend"))
            #expect(server.log.contains("stopped"))
        }
    }

    @Test("bad flags: one line on stderr naming the problem, exit status 2")
    func badFlags() throws {
        let binary = try ServerProcess.binaryPath()
        let cases: [(arguments: [String], mentions: String)] = [
            ([], "--listen"),
            (["--listen", "127.0.0.1:0"], "--memory"),
            (["--listen", "nowhere", "--memory", "1M"], "--listen"),
            (["--listen", "127.0.0.1:0", "--memory", "12X"], "--memory"),
            (["--listen", "127.0.0.1:0", "--memory", "100"], "--memory"),
            (["--listen", "127.0.0.1:0", "--memory", "1M", "--log-level", "loud"], "--log-level"),
            (["--listen", "127.0.0.1:0", "--memory", "1M", "--metrics-listen", "x"], "--metrics-listen"),
            (["--listen", "127.0.0.1:0", "--memory", "1M", "--key-file", "/etc/hostname"], "key-file"),
        ]
        for (arguments, mentions) in cases {
            let (status, output) = try runCommand(binary, arguments, timeoutSeconds: 10)
            #expect(status == 2, "\(arguments): \(output)")
            let lines = output.split(separator: "\n")
            #expect(lines.count == 1 && lines.first?.hasPrefix("memx-server: ") == true && output.contains(mentions),
                    "\(arguments): \(output)")
        }
    }

    @Test("a port already in use is a runtime error (status 1), not a hang")
    func portInUse() throws {
        let directory = try BackendProcess.temporaryDirectory("server-busy")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try ServerProcess(arguments: ["--memory", "1M"], logPath: directory + "/first.log")
        let (status, output) = try runCommand(try ServerProcess.binaryPath(),
                                              ["--listen", "127.0.0.1:\(first.port)", "--memory", "1M"], timeoutSeconds: 10)
        #expect(status == 1, "\(output)")
        #expect(output.contains("cannot listen"))
        #expect(try first.stop() == 0)
    }
}
