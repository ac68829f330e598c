import Glibc
import LinuxSystem
import MemxTesting

// memx-udp-proxy TARGET_HOST:PORT SEED DROP [DUPLICATE [REORDER]]
//
// A benchmark and test tool, not part of a deployment: `DatagramProxy` as a process, so
// Benchmarks/udp-vs-tcp.sh can put seeded datagram loss between memx-vhost and memx-server
// (loopback has no netem here). Prints "listening on 127.0.0.1:PORT" and runs until killed.
let arguments = CommandLine.arguments
guard arguments.count >= 4, let target = TCPAddress(parsing: arguments[1]), let seed = UInt64(arguments[2]),
      let drop = Double(arguments[3]) else {
    print("usage: memx-udp-proxy TARGET_HOST:PORT SEED DROP [DUPLICATE [REORDER]]")
    exit(2)
}
let duplicate = arguments.count > 4 ? Double(arguments[4]) ?? 0 : 0
let reorder = arguments.count > 5 ? Double(arguments[5]) ?? 0 : 0
let proxy = try DatagramProxy(target: target, seed: seed, faults: .init(drop: drop, duplicate: duplicate, reorder: reorder))
let line = "listening on 127.0.0.1:\(proxy.port)\n"
_ = line.withCString { write(1, $0, strlen($0)) }  // unbuffered: the script waits for this line

while true { pause() }
