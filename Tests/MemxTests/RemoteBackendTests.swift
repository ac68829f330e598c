import Foundation
import GuestMemory
import LinuxSystem
import MemxTesting
import RemoteMem
import Testing
import VhostUser
import Virtio

/// memx-vhost on real memx-server processes, driven over its socket by the Swift frontend:
/// the whole data path of issue 3 (vhost-user → block device → page cache → TCP → servers).
@Suite("memx-vhost on memory servers")
struct RemoteBackendTests {
    static func arguments(_ servers: [ServerProcess], cache: String = "1M") -> [String] {
        servers.flatMap { ["--server", "127.0.0.1:\($0.port)"] } + ["--cache", cache]
    }

    /// The flags naming `proxies` as the servers (fault injection without signals: a
    /// SIGSTOPped server was seen answering under heavy load, so stalls go through a proxy).
    static func arguments(_ proxies: [FaultyProxy], cache: String = "1M") -> [String] {
        proxies.flatMap { ["--server", $0.address.description] } + ["--cache", cache]
    }

    @Test("3 servers, a 1 MiB cache, 12 MiB of data: every page goes through the servers and verifies; a restart finds it")
    func dataThroughServers() throws {
        let pool = try ServerPool("remote-data", count: 3)
        let servers = pool.servers
        let backend = try Backend("remote-data", size: "64M", extra: Self.arguments(servers))
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.descriptorLayout = .indirect
        options.dataBytesPerSlot = 128 << 10
        options.slotCount = 32
        var queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        let chunk = 128 << 10
        for i in 0..<96 {  // 12 MiB, 12× the cache
            #expect(try queue.write(sector: UInt64(i * chunk / 512), data: pattern(i, chunk)).isOK)
        }
        #expect(try queue.perform(.flush).isOK)
        for i in stride(from: 0, to: 96, by: 5) {
            #expect(try queue.read(sector: UInt64(i * chunk / 512), byteCount: chunk).1 == pattern(i, chunk))
        }
        _ = try client.stop()
        #expect(try backend.process!.stop() == 0)
        // A new memx-vhost process with an empty cache reads everything back from the servers.
        try backend.start(extra: Self.arguments(servers))
        let second = try backend.connect()
        queue = try second.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        for i in stride(from: 1, to: 96, by: 7) {
            #expect(try queue.read(sector: UInt64(i * chunk / 512), byteCount: chunk).1 == pattern(i, chunk))
        }
    }

    @Test("QD32 reads in flight through a 1 MiB cache on 3 servers, mixed with writes and FLUSH: every block verifies")
    func readsInFlight() throws {
        let pool = try ServerPool("remote-qd32", count: 3)
        let (directory, servers) = (pool.directory, pool.servers)
        let backend = try Backend("remote-qd32", size: "64M", extra: Self.arguments(servers) + ["--pool-directory", directory])
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.descriptorLayout = .indirect
        options.dataBytesPerSlot = 128 << 10
        options.slotCount = 64
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        let blocks = 4096  // 16 MiB of 4 KiB blocks, 16x the cache, over 4 groups
        var version = [Int](repeating: 0, count: blocks)
        func content(_ block: Int) -> [UInt8] { pattern(block * 7 + version[block] * 100_003, 4096) }
        for chunk in 0..<(blocks / 32) {
            let data = (0..<32).flatMap { content(chunk * 32 + $0) }
            #expect(try queue.write(sector: UInt64(chunk * 32 * 8), data: data).isOK)
        }
        #expect(try queue.perform(.flush).isOK)
        var random = SeededRandom(seed: 42)
        var verified = 0
        for round in 0..<40 {
            // 32 distinct blocks: the first 24 read, the last 8 (every other round) rewritten.
            var chosen = Set<Int>()
            while chosen.count < 32 { chosen.insert(Int(random.next() % UInt64(blocks))) }
            let picks = Array(chosen)
            var expected: [Int: (block: Int, bytes: [UInt8]?)] = [:]
            for (i, block) in picks.enumerated() {
                if round % 2 == 1 && i >= 24 {
                    version[block] += 1
                    let slot = try queue.submit(.write(sector: UInt64(block * 8), byteCount: 4096), data: content(block), kick: false)
                    expected[slot] = (block, nil)
                } else {
                    let slot = try queue.submit(.read(sector: UInt64(block * 8), byteCount: 4096), kick: false)
                    expected[slot] = (block, content(block))
                }
            }
            queue.kickIfNeeded()
            var completions: [BlockCompletion] = []
            _ = try queue.waitForCompletions(minimum: 32, timeout: .seconds(20)) { completions.append($0) }
            #expect(completions.count == 32)
            for completion in completions {
                #expect(completion.isOK)
                guard let (block, bytes) = expected[completion.slot], let bytes else { continue }
                let back = try queue.readData(slot: completion.slot, count: 4096)
                #expect(back == bytes, "block \(block) in round \(round)")
                verified += 1
            }
            if round % 10 == 9 { #expect(try queue.perform(.flush).isOK) }
        }
        #expect(verified == 40 * 32 - 20 * 8)  // every read of every round
        // Everything again, after the writes, one block at a time through the same queue.
        for block in stride(from: 0, to: blocks, by: 61) {
            #expect(try queue.read(sector: UInt64(block * 8), byteCount: 4096).1 == content(block))
        }
        _ = try client.stop()
        #expect(try backend.process!.stop() == 0)
    }

    @Test("a stalled (partitioned) server does not hold up reads from the others: they complete first, its own fail after the timeout")
    func stalledServerDoesNotBlockQueue() throws {
        let pool = try ServerPool("remote-stall", count: 2)
        let (directory, servers) = (pool.directory, pool.servers)
        let proxies = try servers.map { try FaultyProxy(target: TCPAddress(host: "127.0.0.1", port: $0.port)) }
        defer { for proxy in proxies { proxy.stop() } }
        let backend = try Backend("remote-stall", size: "64M",
                                  extra: Self.arguments(proxies) + ["--pool-directory", directory, "--replicas", "1"])
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 4096
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        // One page in each of 16 groups of 4 MiB places the groups on both servers; the reads
        // below are of the page after it, never cached, so each must ask its group's server.
        for group in 0..<16 {
            #expect(try queue.write(sector: UInt64(group) * 8192, data: pattern(group, 4096)).isOK)
        }
        #expect(try queue.perform(.flush).isOK)
        // Stop the server holding more of the groups (placement spreads them over both).
        let stored = try servers.map { server in
            try ControlClient(connectingTo: TCPAddress(host: "127.0.0.1", port: server.port)).volumeStat(backend.volume).storedPages
        }
        try #require(stored.allSatisfy { $0 > 0 }, "groups not spread over both servers: \(stored)")
        let victim = stored[0] > stored[1] ? 0 : 1
        proxies[victim].set(.blackhole)
        var slots: [Int: Int] = [:]
        for group in 0..<16 {
            slots[try queue.submit(.read(sector: UInt64(group) * 8192 + 8, byteCount: 4096), kick: false)] = group
        }
        queue.kickIfNeeded()
        var order: [BlockCompletion] = []
        _ = try queue.waitForCompletions(minimum: 16, timeout: .seconds(30)) { order.append($0) }
        let ok = order.filter(\.isOK)
        #expect(!ok.isEmpty && ok.count < 16, """
            ok \(ok.count) of 16; stored pages per server \(stored), stopped server \(victim); \
            after: \(servers.map { try? ControlClient(connectingTo: TCPAddress(host: "127.0.0.1", port: $0.port)).volumeStat(backend.volume) }); \
            order: \(order.map { "\(slots[$0.slot] ?? -1):\($0.statusByte)" }); \
            backend log: \(backend.log.suffix(3000))
            """)
        // Every read the healthy server answered completed before any read of the stalled one.
        let firstFailure = order.firstIndex { !$0.isOK } ?? order.count
        #expect(order[firstFailure...].allSatisfy { !$0.isOK }, "\(order.map(\.isOK))")
        for completion in ok {
            #expect(try queue.readData(slot: completion.slot, count: 4096) == [UInt8](repeating: 0, count: 4096))
        }
        #expect(backend.process!.process.isRunning)
    }

    @Test("write-back (the default): kill -9 after acknowledged, unflushed writes; the next memx-vhost writes them back")
    func writeBackSurvivesKill() throws {
        let pool = try ServerPool("remote-kill", count: 2)
        let (directory, servers) = (pool.directory, pool.servers)
        let proxies = try servers.map { try FaultyProxy(target: TCPAddress(host: "127.0.0.1", port: $0.port)) }
        defer { for proxy in proxies { proxy.stop() } }
        let arguments = Self.arguments(proxies, cache: "8M") + ["--pool-directory", directory]
        let backend = try Backend("remote-kill", size: "64M", extra: arguments)
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 128 << 10
        options.slotCount = 32
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        let chunk = 128 << 10
        // 4 MiB in 2 groups, flushed: the groups are placed and their pages on the servers.
        for i in 0..<32 { #expect(try queue.write(sector: UInt64(i * chunk / 512), data: pattern(i, chunk)).isOK) }
        #expect(try queue.perform(.flush).isOK)
        // Partition both servers: nothing written from now on can reach them before the kill.
        for proxy in proxies { proxy.set(.blackhole) }
        for i in 0..<32 { #expect(try queue.write(sector: UInt64(i * chunk / 512), data: pattern(1000 + i, chunk)).isOK) }
        _ = try backend.process!.stop(signal: SIGKILL)
        // Drop what the dead process had in flight, then let new connections through.
        for proxy in proxies { proxy.set(.cut) }
        for proxy in proxies { proxy.set(.pass) }
        let cacheFile = "\(directory)/memx-\(backend.volume).cache"
        #expect(FileManager.default.fileExists(atPath: cacheFile), "the cache file must outlive the process")

        try backend.start(extra: arguments)
        let second = try backend.connect()
        let again = try second.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        #expect(backend.log.contains("wrote back 1024 dirty pages a previous memx-vhost left"), "\(backend.log)")
        for i in 0..<32 {
            #expect(try again.read(sector: UInt64(i * chunk / 512), byteCount: chunk).1 == pattern(1000 + i, chunk))
        }
        _ = try second.stop()
        #expect(try backend.process!.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: cacheFile), "a clean stop writes everything back and removes the file")
        // A third process with an empty cache reads the same from the servers alone.
        try backend.start(extra: arguments)
        let third = try backend.connect()
        let last = try third.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        for i in stride(from: 0, to: 32, by: 3) {
            #expect(try last.read(sector: UInt64(i * chunk / 512), byteCount: chunk).1 == pattern(1000 + i, chunk))
        }
    }

    @Test("a backend whose lease another took is refused: its FLUSH fails, its log says so, the new one never sees its writes")
    func fencedBackend() throws {
        let pool = try ServerPool("remote-fenced", count: 2)
        let (directory, servers) = (pool.directory, pool.servers)
        let old = try Backend("remote-fenced", size: "64M", extra: Self.arguments(servers) + ["--pool-directory", directory])
        let oldClient = try old.connect()
        let oldQueue = try oldClient.start(queues: 1, queueSize: 128)[0]
        #expect(try oldQueue.write(sector: 0, data: pattern(1, 4096)).isOK)
        #expect(try oldQueue.perform(.flush).isOK)
        // A second memx-vhost (another host, say: its own pool directory) opens the same volume.
        let otherDirectory = directory + "/other"
        try FileManager.default.createDirectory(atPath: otherDirectory, withIntermediateDirectories: true)
        let new = try BackendProcess(socketPath: directory + "/new.sock",
                                     arguments: ["--size", "64M", "--volume", old.volume, "--pool-directory", otherDirectory]
                                         + Self.arguments(servers),
                                     logPath: directory + "/new.log")
        defer { _ = try? new.stop() }
        // The old backend's next write completes in its cache, but cannot reach the servers.
        #expect(try oldQueue.write(sector: 0, data: pattern(2, 4096)).isOK)
        let flush = try oldQueue.perform(.flush)
        #expect(flush.statusByte == 1, "FLUSH after losing the lease must fail")
        #expect(old.log.contains("was opened by another backend"), "\(old.log.suffix(2000))")
        let newClient = try FrontendClient.connect(socketPath: directory + "/new.sock", guestRAM: try GuestRAM(sizeBytes: 64 << 20))
        let newQueue = try newClient.start(queues: 1, queueSize: 128)[0]
        #expect(try newQueue.read(sector: 0, byteCount: 4096).1 == pattern(1, 4096))
        _ = try newClient.stop()
        _ = try? oldClient.stop()
    }

    @Test("--metrics-listen: I/O errors, the cache, servers up and down and re-replication, in Prometheus text")
    func metrics() throws {
        let pool = try ServerPool("remote-metrics", count: 3)
        let (directory, servers) = (pool.directory, pool.servers)
        let backend = try Backend("remote-metrics", size: "64M",
                                  extra: Self.arguments(servers) + ["--pool-directory", directory, "--metrics-listen", "127.0.0.1:0"])
        let port = try #require(backend.log.split(separator: "metrics on http://127.0.0.1:").last.flatMap { UInt16($0.prefix { $0.isNumber }) })
        func scrape() throws -> String {
            try MemoryServerTests.exchange(try TCPConnection(connectingTo: TCPAddress(host: "127.0.0.1", port: port)),
                                           Array("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        }
        let client = try backend.connect()
        let queue = try client.start(queues: 1, queueSize: 128)[0]
        for group in 0..<8 { #expect(try queue.write(sector: UInt64(group) * 8192, data: pattern(group, 4096)).isOK) }
        #expect(try queue.perform(.flush).isOK)
        var text = try scrape()
        #expect(text.hasPrefix("HTTP/1.1 200 OK"))
        #expect(text.contains("memx_vhost_replicas 2"))
        #expect(text.contains("memx_vhost_servers{state=\"down\"} 0"))
        #expect(text.contains("memx_vhost_cache_writeback_pages_total 8"))
        #expect(text.contains("memx_vhost_store_errors_total 0"))
        _ = try servers[0].stop(signal: SIGKILL)
        let deadline = Date().addingTimeInterval(20)
        repeat {
            usleep(100_000)
            text = try scrape()
        } while Date() < deadline && text.contains("memx_vhost_rereplicated_groups_total 0\n")
        #expect(text.contains("memx_vhost_servers{state=\"down\"} 1"), "\(text)")
        #expect(!text.contains("memx_vhost_rereplicated_groups_total 0\n"), "\(text)")
        for group in 0..<8 { #expect(try queue.read(sector: UInt64(group) * 8192, byteCount: 4096).1 == pattern(group, 4096)) }
        _ = try client.stop()
    }

    @Test("a full pool: written through, the writes past its capacity fail with IOERR; earlier data stays readable")
    func fullPool() throws {
        let pool = try ServerPool("remote-full", count: 1, memory: "1M")
        let servers = pool.servers
        let backend = try Backend("remote-full", size: "16M", extra: Self.arguments(servers) + ["--write-through"])
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 64 << 10
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        var statuses: [UInt8] = []
        // Random bytes: no two pages alike, so de-duplication saves nothing and the server fills.
        func unique(_ i: Int) -> [UInt8] {
            var random = SeededRandom(seed: UInt64(i) + 1)
            return random.bytes(64 << 10)
        }
        for i in 0..<24 {  // 1.5 MiB into a 1 MiB server, written through
            statuses.append(try queue.write(sector: UInt64(i * 128), data: unique(i)).statusByte)
        }
        #expect(statuses.prefix(16).allSatisfy { $0 == 0 }, "\(statuses)")
        #expect(statuses.suffix(8).allSatisfy { $0 == 1 }, "\(statuses)")
        #expect(try queue.read(sector: 0, byteCount: 64 << 10).1 == unique(0))
    }

    @Test("a server that dies: requests for its pages fail with IOERR within seconds, others still work")
    func deadServer() throws {
        let pool = try ServerPool("remote-dead", count: 2)
        let servers = pool.servers
        let backend = try Backend("remote-dead", size: "64M", extra: Self.arguments(servers) + ["--write-through", "--replicas", "1"])
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 4096
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        // One page in each of 16 groups of 4 MiB: both servers hold some.
        for group in 0..<16 {
            #expect(try queue.write(sector: UInt64(group) * 8192, data: pattern(group, 4096)).isOK)
        }
        let stored = try servers.map { server in
            try ControlClient(connectingTo: TCPAddress(host: "127.0.0.1", port: server.port)).volumeStat(backend.volume).storedPages
        }
        try #require(stored.allSatisfy { $0 > 0 }, "groups not spread over both servers: \(stored)")
        let victim = stored[0] > stored[1] ? 0 : 1
        _ = try servers[victim].stop(signal: SIGKILL)
        var failed = 0, ok = 0
        let start = Date()
        for group in 0..<16 {
            let (completion, data) = try queue.read(sector: UInt64(group) * 8192 + 8, byteCount: 4096, timeout: .seconds(10))
            if completion.isOK { ok += 1; _ = data } else { #expect(completion.statusByte == 1); failed += 1 }
        }
        #expect(failed > 0 && ok > 0, "ok \(ok), failed \(failed)")
        #expect(Date().timeIntervalSince(start) < 30)
        #expect(backend.process!.process.isRunning)
        _ = try servers[1 - victim].stop()
    }
}
