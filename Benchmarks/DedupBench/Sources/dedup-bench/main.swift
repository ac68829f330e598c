import Glibc

// dedup-bench: the de-duplication measurements (Benchmarks/README.md, "De-duplication").
//   dedup-bench hash  [--megabytes N]          throughput of MX128, SHA-256, memcmp, memcpy
//   dedup-bench store [--writes N]             store write path: de-duplication off / on
//   dedup-bench write-image --socket S --image FILE   write FILE through a vhost-user socket
let arguments = Array(CommandLine.arguments.dropFirst())

func option(_ name: String, default value: String? = nil) -> String? {
    guard let index = arguments.firstIndex(of: name), index + 1 < arguments.count else { return value }
    return arguments[index + 1]
}

func fail(_ message: String) -> Never {
    printError("dedup-bench: \(message)")
    exit(2)
}

switch arguments.first {
case "hash":
    HashBenchmark(megabytes: Int(option("--megabytes", default: "64")!) ?? 64).run()
case "store":
    StoreBenchmark(writes: Int(option("--writes", default: "200000")!) ?? 200_000).run()
case "write-image":
    guard let socket = option("--socket"), let image = option("--image") else { fail("write-image needs --socket and --image") }
    do {
        try ImageWriter(socketPath: socket, imagePath: image).run()
    } catch {
        printError("dedup-bench: \(error)")
        exit(1)
    }
default:
    fail("usage: dedup-bench hash [--megabytes N] | store [--writes N] | write-image --socket PATH --image FILE")
}
