import Foundation
import LinuxSystem
import MemxTesting
import RemoteMem
import Testing

/// Memory servers for one test: real `memx-server` processes on 127.0.0.1.
final class ServerPool {
    let directory: String
    var servers: [ServerProcess] = []

    let memory: String
    /// More memx-server flags (`--transport udp`).
    let extraArguments: [String]

    init(_ name: String, count: Int, memory: String = "64M", extraArguments: [String] = []) throws {
        directory = try BackendProcess.temporaryDirectory(name)
        self.memory = memory
        self.extraArguments = extraArguments
        for i in 0..<count {
            servers.append(try ServerProcess(arguments: ["--memory", memory] + extraArguments, logPath: directory + "/server\(i).log"))
        }
    }

    /// Starts server `i` again, empty, on the port it had (after it was stopped or killed).
    func restart(_ i: Int) throws {
        servers[i] = try ServerProcess(arguments: ["--memory", memory] + extraArguments, logPath: directory + "/server\(i)-restarted.log",
                                       port: servers[i].port)
    }

    var addresses: [TCPAddress] { servers.map { TCPAddress(host: "127.0.0.1", port: $0.port) } }

    var logs: String { servers.enumerated().map { "server \($0.offset):\n\($0.element.log.suffix(2000))" }.joined(separator: "\n") }

    deinit {
        for server in servers { _ = try? server.stop(signal: SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

extension PageStore {
    func read(at offset: UInt64, count: Int) throws(PageStoreError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: count)
        let result = bytes.withUnsafeMutableBytes { buffer in
            Result { () throws(PageStoreError) in try read(at: offset, into: buffer) }
        }
        try result.get()
        return bytes
    }

    func write(at offset: UInt64, _ bytes: [UInt8]) throws(PageStoreError) {
        let result = bytes.withUnsafeBytes { buffer in
            Result { () throws(PageStoreError) in try write(at: offset, from: buffer) }
        }
        try result.get()
    }
}

@Suite("Remote pool over loopback", .serialized)
struct RemotePoolTests {
    static let volumeBytes: UInt64 = 64 << 20
    static let cacheBytes: UInt64 = 4 << 20
    static let chunk = 128 * 1024

    /// One copy per page unless asked: most tests here are about placement and single-copy
    /// failures (replication has its own suite).
    func options(writeThrough: Bool = false, timeoutMillis: Int = 2000, replicas: Int = 1) -> RemotePageStore.Options {
        RemotePageStore.Options(cacheBytes: Self.cacheBytes, writeThrough: writeThrough,
                                connection: .init(requestTimeoutMillis: timeoutMillis, connectTimeoutMillis: 1000),
                                replicas: replicas)
    }

    /// Seeded data for `[offset, offset + count)`, the same on every call.
    func data(_ offset: Int, _ count: Int) -> [UInt8] {
        var random = SeededRandom(seed: SeededRandom.defaultSeed ^ UInt64(offset))
        return random.bytes(count)
    }

    /// Writes `bytes` of seeded data from offset 0 in 128 KiB requests.
    func fill(_ store: PageStore, bytes: Int) throws {
        for offset in stride(from: 0, to: bytes, by: Self.chunk) { try store.write(at: UInt64(offset), data(offset, Self.chunk)) }
    }

    func verify(_ store: PageStore, bytes: Int, from start: Int = 0) throws {
        for offset in stride(from: start, to: bytes, by: Self.chunk) {
            let read = try store.read(at: UInt64(offset), count: Self.chunk)
            #expect(read == data(offset, Self.chunk), "mismatch at \(offset)")
            if read != data(offset, Self.chunk) { return }
        }
    }

    @Test("3× the cache of data goes through 3 servers and reads back")
    func dataThroughServers() throws {
        let pool = try ServerPool("pool-data", count: 3)
        let store = try RemotePageStore(servers: pool.addresses, volume: "data", capacityBytes: Self.volumeBytes, options: options())
        let bytes = 3 * Int(Self.cacheBytes)
        try fill(store, bytes: bytes)
        try store.flush()
        try verify(store, bytes: bytes)
        #expect(store.cache.statistics.evictions > 0 && store.cache.statistics.misses > 0)
        // One 4 MiB group per server: placement spread them by free capacity.
        let holders = Set((0..<3).compactMap { store.volume.server(ofPage: UInt64($0) * 1024) })
        #expect(holders.count == 3, "\(store.volume.groupTable)")
        for result in store.volume.serverStatistics() {
            let stat = try result.get()
            #expect(stat.usedFrames == 1024, "\(stat)")
        }
        #expect(store.close() == nil)
    }

    @Test("scattered write-back of many single pages (more requests than a connection's window) neither stalls nor fails")
    func scatteredWriteBack() throws {
        // A 1 MiB cache full of dirty pages scattered over 16 groups: one write-back call has
        // ~128 single-page requests per server, twice the in-flight window. Submitting them all
        // before waiting once deadlocked on the window until the 2 s timeout.
        let pool = try ServerPool("pool-scatter", count: 2)
        var options = options()
        options.cacheBytes = 1 << 20
        let store = try RemotePageStore(servers: pool.addresses, volume: "scatter", capacityBytes: Self.volumeBytes,
                                        options: options)
        var generator = SeededRandom(seed: 7)
        var pages: [UInt64: UInt8] = [:]
        let started = Date()
        for i in 0..<2048 {
            let page = UInt64.random(in: 0..<(Self.volumeBytes / 4096), using: &generator)
            let byte = UInt8(truncatingIfNeeded: i)
            try store.write(at: page * 4096, [UInt8](repeating: byte, count: 4096))
            pages[page] = byte
        }
        try store.flush()
        #expect(Date().timeIntervalSince(started) < 20)
        for (page, byte) in pages.prefix(200) {
            #expect(try store.read(at: page * 4096, count: 4096) == [UInt8](repeating: byte, count: 4096))
        }
        #expect(store.close() == nil)
    }

    @Test("a second store opening the volume by name finds the same placement and data")
    func groupTableReloaded() throws {
        let pool = try ServerPool("pool-reload", count: 3)
        let bytes = 3 * Int(Self.cacheBytes)
        let first = try RemotePageStore(servers: pool.addresses, volume: "reload", capacityBytes: Self.volumeBytes, options: options())
        try fill(first, bytes: bytes)
        // A write far into the volume places a fourth group.
        try first.write(at: Self.volumeBytes - 4096, data(99, 4096))
        // Groups are placed when their pages are written back, so flush before looking.
        try first.flush()
        let table = first.volume.groupTable
        #expect(table.replicas(of: 15).count == 1)
        #expect(first.close() == nil)

        // The servers in another order: the table names servers by id, not by position.
        let second = try RemotePageStore(servers: pool.addresses.reversed(), volume: "reload", capacityBytes: Self.volumeBytes,
                                         options: options())
        #expect(second.volume.groupTable == table)
        #expect(second.volume.epoch > first.volume.epoch)
        try verify(second, bytes: bytes)
        #expect(try second.read(at: Self.volumeBytes - 4096, count: 4096) == data(99, 4096))
        // Never-written groups read as zeros.
        #expect(try second.read(at: 32 << 20, count: 8192) == [UInt8](repeating: 0, count: 8192))
        second.close()

        #expect(throws: RemoteMemError.self) {
            _ = try RemotePageStore(servers: pool.addresses, volume: "reload", capacityBytes: Self.volumeBytes * 2, options: options())
        }
        do {
            _ = try RemotePageStore(servers: pool.addresses, volume: "reload", capacityBytes: Self.volumeBytes / 2, options: options())
        } catch {
            guard case .geometryMismatch = error else { throw error }
        }
    }

    @Test("a full server: the write fails with FULL and the pool reports it")
    func fullServer() throws {
        let pool = try ServerPool("pool-full", count: 1, memory: "1M")
        let store = try RemotePageStore(servers: pool.addresses, volume: "full", capacityBytes: Self.volumeBytes,
                                        options: options(writeThrough: true))
        var failure: PageStoreError?
        var written = 0
        do {
            while written < 2 << 20 {
                try store.write(at: UInt64(written), data(written, Self.chunk))
                written += Self.chunk
            }
        } catch {
            failure = error
        }
        #expect(failure == .full)
        #expect(written == 1 << 20, "wrote \(written) bytes into a 1 MiB server")
        if case .full = store.lastError {} else { Issue.record("lastError is \(String(describing: store.lastError))") }
        let stat = try store.volume.serverStatistics()[0].get()
        #expect(stat.usedFrames == stat.capacityFrames)
        // What was acknowledged is intact.
        try verify(store, bytes: written)
        store.close()

        // Write-back: the write completes into the cache; FLUSH reports FULL.
        let pool2 = try ServerPool("pool-full-wb", count: 1, memory: "1M")
        let cached = try RemotePageStore(servers: pool2.addresses, volume: "full", capacityBytes: Self.volumeBytes, options: options())
        try fill(cached, bytes: 2 << 20)
        #expect(throws: PageStoreError.full) { try cached.flush() }
        cached.close()
    }

    @Test("a killed server: reads of its groups fail promptly, others still work")
    func killedServer() throws {
        let pool = try ServerPool("pool-kill", count: 3)
        let bytes = 3 * Int(Self.cacheBytes)
        let writer = try RemotePageStore(servers: pool.addresses, volume: "kill", capacityBytes: Self.volumeBytes, options: options())
        try fill(writer, bytes: bytes)
        #expect(writer.close() == nil)

        let store = try RemotePageStore(servers: pool.addresses, volume: "kill", capacityBytes: Self.volumeBytes, options: options())
        let victim = try #require(store.volume.server(ofPage: 1024))
        try pool.servers[victim].stop(signal: SIGKILL)
        let start = Date()
        #expect(throws: PageStoreError.self) { _ = try store.read(at: 4 << 20, count: Self.chunk) }
        #expect(Date().timeIntervalSince(start) < 1.0, "the failed read took \(Date().timeIntervalSince(start)) s")
        switch store.lastError {
        case .connectionLost, .unreachable: break
        default: Issue.record("lastError is \(String(describing: store.lastError))")
        }
        // Again, while the connection is down and reconnecting: still prompt.
        let again = Date()
        #expect(throws: PageStoreError.self) { _ = try store.read(at: (4 << 20) + 65536, count: 4096) }
        #expect(Date().timeIntervalSince(again) < 0.5)
        // Groups on the other servers are fine.
        try verify(store, bytes: 4 << 20)
        try verify(store, bytes: 12 << 20, from: 8 << 20)
        store.close()
    }

    @Test("a second open of the volume fences the first store")
    func fencing() throws {
        let pool = try ServerPool("pool-fence", count: 2)
        let first = try RemotePageStore(servers: pool.addresses, volume: "fence", capacityBytes: Self.volumeBytes,
                                        options: options(writeThrough: true))
        try first.write(at: 0, data(0, Self.chunk))
        let second = try RemotePageStore(servers: pool.addresses, volume: "fence", capacityBytes: Self.volumeBytes, options: options())
        #expect(second.volume.epoch > first.volume.epoch)
        #expect(throws: PageStoreError.self) { try first.write(at: 0, data(1, Self.chunk)) }
        guard case .fenced = first.lastError else {
            Issue.record("lastError is \(String(describing: first.lastError))")
            return
        }
        #expect(first.lastError?.isRetryable == false)
        // The new owner sees the first store's acknowledged data, not the fenced write.
        #expect(try second.read(at: 0, count: Self.chunk) == data(0, Self.chunk))
        first.close()
        second.close()
    }

    @Test("a server that stops answering: requests time out, then the connection comes back")
    func timeoutAndReconnect() throws {
        let pool = try ServerPool("pool-stall", count: 1)
        let connection = try ServerConnection(address: pool.addresses[0], options: .init(requestTimeoutMillis: 300))
        defer { connection.close() }
        #expect(try connection.call(.ping, payload: [1, 2, 3]).payload == [1, 2, 3])
        let pid = pool.servers[0].process.processIdentifier
        kill(pid, SIGSTOP)
        // SIGSTOP is delivered asynchronously: wait until every thread of the server is stopped.
        let stopDeadline = Date().addingTimeInterval(5)
        while Date() < stopDeadline {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            let states = tasks.compactMap { try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/stat", encoding: .utf8) }
                .map { $0.split(separator: ")").last?.split(separator: " ").first ?? "" }
            if !states.isEmpty && states.allSatisfy({ $0 == "T" || $0 == "t" }) { break }
            usleep(1000)
        }
        let start = Date()
        #expect(throws: RemoteMemError.timedOut(server: pool.addresses[0].description, operation: "PING", milliseconds: 300)) {
            _ = try connection.call(.ping)
        }
        #expect(Date().timeIntervalSince(start) < 1.0)
        kill(pool.servers[0].process.processIdentifier, SIGCONT)
        // The maintenance thread reconnects with backoff (100 ms, 200 ms, …).
        let deadline = Date().addingTimeInterval(5)
        while !connection.isConnected && Date() < deadline { usleep(10_000) }
        #expect(connection.isConnected)
        #expect(try connection.call(.ping, payload: [4]).payload == [4])
    }

    @Test("pipelined requests on one connection complete, out of order or not")
    func pipelining() throws {
        let pool = try ServerPool("pool-pipe", count: 1)
        let connection = try ServerConnection(address: pool.addresses[0])
        defer { connection.close() }
        var tickets: [RequestTicket] = []
        for i in 0..<(WireLimits.inFlightMax + 20) {
            let payload: [UInt8] = [UInt8(i & 0xFF), 7]
            let header = FrameHeader(opcode: .ping, requestID: 0)
            tickets.append(try payload.withUnsafeBytes { try connection.submit(header, payload: $0, sendingPages: nil, receivingPages: nil) })
            if tickets.count == WireLimits.inFlightMax {
                for (j, ticket) in tickets.enumerated() { #expect(try connection.wait(ticket).payload == [UInt8((i - tickets.count + 1 + j) & 0xFF), 7]) }
                tickets = []
            }
        }
        for ticket in tickets { #expect(try connection.wait(ticket).status == .ok) }
    }
}

@Suite("Group table and client errors")
struct GroupTableTests {
    @Test("the group table round-trips and rejects damage")
    func roundTrip() throws {
        var table = GroupTable(groupCount: 300)
        let a = [UInt8](repeating: 1, count: 16)
        let b = [UInt8](repeating: 2, count: 16)
        table.assign(group: 0, to: a)
        table.assign(group: 299, to: b)
        table.assign(group: 7, to: a)
        let decoded = try GroupTable(decoding: table.encoded())
        #expect(decoded == table)
        #expect(decoded.primary(of: 299) == 1 && decoded.primary(of: 7) == 0 && decoded.primary(of: 8) == nil)
        #expect(decoded.groupCounts() == [2, 1])
        var bytes = table.encoded()
        bytes[bytes.count - 1] = 9  // an entry naming a server that is not listed
        #expect(throws: RemoteMemError.self) { _ = try GroupTable(decoding: bytes) }
        #expect(throws: RemoteMemError.self) { _ = try GroupTable(decoding: Array(table.encoded().dropLast())) }
        #expect(throws: RemoteMemError.self) { _ = try GroupTable(decoding: [1, 2, 3]) }
        // The largest volume whose table fits one METADATA_PUT: 4 TiB at one replica.
        #expect(GroupTable.fits(groupCount: GroupTable.groupCount(pageCount: (1 << 40) / 4096)))
        #expect(!GroupTable.fits(groupCount: GroupTable.groupCount(pageCount: (8 << 40) / 4096)))
    }

    @Test("errors say whether retrying can help, and map to the block device's errors")
    func errorClassification() {
        #expect(RemoteMemError.timedOut(server: "s", operation: "READ", milliseconds: 2000).isRetryable)
        #expect(RemoteMemError.connectionLost(server: "s", reason: "r").isRetryable)
        #expect(!RemoteMemError.full(server: "s").isRetryable)
        #expect(!RemoteMemError.fenced(server: "s", volume: "v", epoch: 3).isRetryable)
        #expect(RemoteMemError.full(server: "s").pageStoreError == .full)
        if case .busy = RemoteMemError.fenced(server: "s", volume: "v", epoch: 3).pageStoreError {} else { Issue.record("fenced is not busy") }
    }
}
