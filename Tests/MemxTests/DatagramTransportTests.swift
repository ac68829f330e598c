import Foundation
import Glibc
import LinuxSystem
import Logging
import MemoryServer
import MemxTesting
import RemoteMem
import Testing

/// The UDP transport (docs/PROTOCOL.md, "UDP transport"): through a proxy that drops,
/// duplicates, reorders and delays datagrams at seeded rates (`MEMX_SEED` replays a run), data
/// always verifies, no WRITE is applied twice (the server counts WRITEs it applies), and nothing
/// hangs; a killed server fails over as under TCP.
@Suite("UDP transport", .serialized)
struct DatagramTransportTests {
    static let pageSize = WireLimits.pageSize

    /// Seeded page contents: page `page`, version `version`.
    func page(_ page: Int, version: Int = 0) -> [UInt8] {
        var random = SeededRandom(seed: SeededRandom.defaultSeed ^ UInt64(page) ^ UInt64(version) << 40)
        return random.bytes(Self.pageSize)
    }

    func udpServer(key: ClusterKey? = nil) throws -> MemoryServer {
        var logger = Logger(label: "memx-server-udp-test")
        logger.logLevel = .critical
        let server = try MemoryServer(listen: TCPAddress(host: "127.0.0.1", port: 0), memoryBytes: 64 << 20, clusterKey: key,
                                      transport: .udp, logger: logger)
        try server.start()
        return server
    }

    func udpOptions(timeoutMillis: Int = 5000, key: ClusterKey? = nil) -> ServerConnection.Options {
        ServerConnection.Options(requestTimeoutMillis: timeoutMillis, connectTimeoutMillis: 3000, clusterKey: key, transport: .udp)
    }

    @Test("loss control: the window halves on a timeout (once per RTO), grows back per window of replies; RTO follows the RTT")
    func lossControl() {
        var loss = LossControl()
        #expect(loss.limit == WireLimits.inFlightMax)
        #expect(loss.rtoNanos == LossControl.rtoNanosInitial)
        loss.timedOut(now: 1_000_000_000)
        #expect(loss.limit == WireLimits.inFlightMax / 2)
        loss.timedOut(now: 1_000_000_001)  // the same loss event: no second halving
        #expect(loss.limit == WireLimits.inFlightMax / 2)
        for _ in 0..<64 { loss.acknowledged(sampleNanos: 100_000) }
        #expect(loss.limit > WireLimits.inFlightMax / 2)
        #expect(loss.rtoNanos == LossControl.rtoNanosMin, "a 100 µs RTT clamps to the minimum RTO")
        for i in 0..<20 { loss.timedOut(now: 2_000_000_000 + UInt64(i) * 1_000_000_000) }
        #expect(loss.limit == 1)
        for _ in 0..<10 { loss.acknowledged(sampleNanos: 2_000_000_000) }
        #expect(loss.rtoNanos == LossControl.rtoNanosMax)
    }

    /// Creates and opens `name` on `connection`; returns the handle and epoch.
    func open(_ name: String, pages: Int, on connection: ServerConnection) throws -> (UInt32, UInt64) {
        let created = try connection.call(.volumeCreate, payload: WireMessages.volumeCreate(name: name, sizeBytes: UInt64(pages * Self.pageSize)))
        #expect(created.status == .ok)
        let opened = try connection.call(.volumeOpen, payload: WireMessages.volumeOpen(name: name, minimumEpoch: 0))
        #expect(opened.status == .ok)
        return (opened.header.volume, opened.header.epoch)
    }

    @Test("seeded drop, duplicate, reorder and delay: every page verifies, each WRITE applies exactly once, nothing hangs")
    func faultyNetwork() throws {
        let server = try udpServer()
        defer { server.stop() }
        let seed = TestEnvironment.seed(default: 0x75_6470)
        let proxy = try DatagramProxy(target: server.address, seed: seed,
                                      faults: .init(drop: 0.05, duplicate: 0.05, reorder: 0.10, reorderMaxMicros: 3000, delayMicros: 0))
        defer { proxy.stop() }
        let started = Date()
        let connection = try ServerConnection(address: proxy.address, options: udpOptions())
        defer { connection.close() }
        let pages = 512
        let (handle, epoch) = try open("lossy", pages: pages, on: connection)
        let writesBefore = server.counters.requests(for: .write)

        // WRITEs of 8 pages (8 datagrams each), 16 requests in flight.
        let source = UnsafeMutableRawPointer.allocate(byteCount: pages * Self.pageSize, alignment: 4096)
        defer { source.deallocate() }
        for i in 0..<pages { page(i).withUnsafeBytes { (source + i * Self.pageSize).copyMemory(from: $0.baseAddress!, byteCount: Self.pageSize) } }
        var pointers = (0..<pages).map { source + $0 * Self.pageSize }
        var tickets: [RequestTicket] = []
        for first in stride(from: 0, to: pages, by: 8) {
            let header = FrameHeader(opcode: .write, requestID: 0, volume: handle, pageCount: 8, epoch: epoch, page: UInt64(first))
            let ticket = try pointers.withUnsafeMutableBufferPointer { all in
                try connection.submit(header, sendingPages: UnsafeBufferPointer(rebasing: all[first..<first + 8]), receivingPages: nil)
            }
            tickets.append(ticket)
            if tickets.count == 16 {
                for ticket in tickets { #expect(try connection.wait(ticket).status == .ok) }
                tickets = []
            }
        }
        for ticket in tickets { #expect(try connection.wait(ticket).status == .ok) }
        #expect(server.counters.requests(for: .write) - writesBefore == UInt64(pages),
                "each page's WRITE applied once (proxy: \(proxy.counts), duplicates answered: \(server.duplicatesAnswered))")

        // READs of 32 pages (32 datagrams each) into a zeroed buffer.
        let destination = UnsafeMutableRawPointer.allocate(byteCount: pages * Self.pageSize, alignment: 4096)
        defer { destination.deallocate() }
        destination.initializeMemory(as: UInt8.self, repeating: 0, count: pages * Self.pageSize)
        pointers = (0..<pages).map { destination + $0 * Self.pageSize }
        for first in stride(from: 0, to: pages, by: 32) {
            let header = FrameHeader(opcode: .read, requestID: 0, volume: handle, pageCount: 32, epoch: epoch, page: UInt64(first))
            let ticket = try pointers.withUnsafeMutableBufferPointer { all in
                try connection.submit(header, sendingPages: nil, receivingPages: UnsafeBufferPointer(rebasing: all[first..<first + 32]))
            }
            #expect(try connection.wait(ticket).status == .ok)
        }
        #expect(memcmp(source, destination, pages * Self.pageSize) == 0, "pages differ after a lossy round trip (seed \(seed))")
        let counts = proxy.counts
        #expect(counts.dropped > 0 && counts.duplicated > 0 && counts.reordered > 0, "\(counts)")
        #expect(server.duplicatesAnswered > 0, "duplicates must have been answered from the reply cache")
        #expect(connection.retransmissions > 0)
        #expect(Date().timeIntervalSince(started) < 60, "took \(Date().timeIntervalSince(started)) s (seed \(seed))")
    }

    @Test("HELLO and AUTH are retransmitted under loss; the key check is the same as over TCP")
    func authenticationUnderLoss() throws {
        let key = try ClusterKey(bytes: Array(repeating: 0x5A, count: 32))
        let other = try ClusterKey(bytes: Array(repeating: 0x33, count: 32))
        let server = try udpServer(key: key)
        defer { server.stop() }
        let proxy = try DatagramProxy(target: server.address, seed: TestEnvironment.seed(default: 11),
                                      faults: .init(drop: 0.3, duplicate: 0.3))
        defer { proxy.stop() }
        for _ in 0..<5 {
            let connection = try ServerConnection(address: proxy.address, options: udpOptions(key: key))
            #expect(try connection.call(.ping, payload: [1, 2, 3]).payload == [1, 2, 3])
            connection.close()
        }
        #expect(throws: RemoteMemError.self) { _ = try ServerConnection(address: proxy.address, options: udpOptions(key: other)) }
        #expect(throws: RemoteMemError.self) { _ = try ServerConnection(address: proxy.address, options: udpOptions()) }
    }

    @Test("a volume over UDP with 1% loss, duplicates and reordering: write-back, flush, read back through the page store")
    func pageStoreOverLossyUDP() throws {
        let server = try udpServer()
        defer { server.stop() }
        let proxy = try DatagramProxy(target: server.address, seed: TestEnvironment.seed(default: 0x70_6173),
                                      faults: .init(drop: 0.01, duplicate: 0.01, reorder: 0.05))
        defer { proxy.stop() }
        let options = RemotePageStore.Options(cacheBytes: 2 << 20, connection: udpOptions(timeoutMillis: 3000), replicas: 1)
        let store = try RemotePageStore(servers: [proxy.address], volume: "lossy-store", capacityBytes: 64 << 20, options: options)
        let bytes = 8 << 20
        for offset in stride(from: 0, to: bytes, by: 128 << 10) {
            let chunk = (0..<32).flatMap { page((offset >> 12) + $0) }
            try store.write(at: UInt64(offset), chunk)
        }
        try store.flush()
        for offset in stride(from: 0, to: bytes, by: 128 << 10) {
            let expected = (0..<32).flatMap { page((offset >> 12) + $0) }
            let read = try store.read(at: UInt64(offset), count: 128 << 10)
            #expect(read == expected, "mismatch at \(offset) (\(proxy.counts))")
            if read != expected { break }
        }
        #expect(store.close() == nil)
    }

    @Test("2 replicas on 3 UDP servers: a killed server costs no error, as under TCP")
    func killedServerFailsOver() throws {
        let pool = try ServerPool("udp-kill", count: 3, extraArguments: ["--transport", "udp"])
        let options = RemotePageStore.Options(cacheBytes: 2 << 20,
                                              connection: .init(requestTimeoutMillis: 1000, connectTimeoutMillis: 500, transport: .udp),
                                              replicas: 2)
        let store = try RemotePageStore(servers: pool.addresses, volume: "udp-repl", capacityBytes: 64 << 20, options: options)
        defer { store.close() }
        let bytes = 12 << 20
        for offset in stride(from: 0, to: bytes, by: 128 << 10) {
            try store.write(at: UInt64(offset), (0..<32).flatMap { page((offset >> 12) + $0) })
        }
        try store.flush()
        _ = try pool.servers[1].stop(signal: SIGKILL)
        let started = Date()
        for offset in stride(from: 0, to: bytes, by: 128 << 10) {
            #expect(try store.read(at: UInt64(offset), count: 128 << 10) == (0..<32).flatMap { page((offset >> 12) + $0) }, "at \(offset)")
        }
        for offset in stride(from: 0, to: 4 << 20, by: 128 << 10) {
            try store.write(at: UInt64(offset), (0..<32).flatMap { page((offset >> 12) + $0, version: 1) })
        }
        try store.flush()
        for offset in stride(from: 0, to: 4 << 20, by: 128 << 10) {
            #expect(try store.read(at: UInt64(offset), count: 128 << 10) == (0..<32).flatMap { page((offset >> 12) + $0, version: 1) })
        }
        #expect(Date().timeIntervalSince(started) < 30)
        #expect(store.volume.downServers == [1])
    }
}
