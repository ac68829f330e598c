import Dispatch
import Glibc
import LinuxSystem
import Logging
import MemoryServer
import MemxTesting
import RemoteMem
import Synchronization
import Testing

/// A blocking test client of the MemX wire protocol over one TCP connection: `ControlClient`'s
/// raw frames (so tests can send anything: pipelined, malformed, unknown) with the requests the
/// tests need, answering with the server's status rather than throwing it.
final class WireClient: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): in pipelined tests one thread only sends (and makes ids)
    // and one only receives, which `ControlClient` allows.
    let control: ControlClient

    /// Connects to 127.0.0.1:`port` and, unless `hello` is false, does the HELLO handshake.
    init(port: UInt16, hello: Bool = true) throws {
        control = try ControlClient(connectingTo: TCPAddress(host: "127.0.0.1", port: port), timeoutMillis: 10_000,
                                    handshake: hello)
    }

    static func helloPayload(magic: UInt64 = WireLimits.magic, version: UInt16 = WireLimits.version) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(magic)
        writer.u16(version)
        writer.u16(0)
        writer.u32(0)
        writer.raw([UInt8](repeating: 0xab, count: 16))
        return writer.bytes
    }

    func makeID() -> UInt64 { control.makeRequestID() }

    /// Sends one frame as given (length is set from the payload unless `length` says otherwise).
    func send(_ header: FrameHeader, payload: [UInt8] = [], length: UInt32? = nil) throws {
        var header = header
        header.length = length ?? UInt32(payload.count)
        try control.send(header, payload: payload)
    }

    /// Reads one reply frame.
    func receive() throws -> (header: FrameHeader, payload: [UInt8]) { try control.receive() }

    /// One request, one reply (checked to carry the request's id and opcode).
    @discardableResult
    func call(_ opcode: Opcode, volume: UInt32 = 0, epoch: UInt64 = 0, page: UInt64 = 0, pageCount: UInt32 = 0,
              payload: [UInt8] = []) throws -> (header: FrameHeader, payload: [UInt8]) {
        try control.call(opcode, volume: volume, epoch: epoch, page: page, pageCount: pageCount, payload: payload)
    }

    // MARK: - Operations

    /// VOLUME_CREATE sent as is (no client-side checks: tests send bad names and sizes).
    func create(_ name: String, sizeBytes: UInt64) throws -> WireStatus? {
        var writer = PayloadWriter()
        writer.u64(sizeBytes)
        writer.name(name)
        return try call(.volumeCreate, payload: writer.bytes).header.statusValue
    }

    /// VOLUME_OPEN → (handle, epoch, reply payload).
    func open(_ name: String, minimumEpoch: UInt64 = 0) throws -> (status: WireStatus?, handle: UInt32, epoch: UInt64, payload: [UInt8]) {
        var writer = PayloadWriter()
        writer.u64(minimumEpoch)
        writer.name(name)
        let reply = try call(.volumeOpen, payload: writer.bytes)
        return (reply.header.statusValue, reply.header.volume, reply.header.epoch, reply.payload)
    }

    func named(_ opcode: Opcode, _ name: String) throws -> (header: FrameHeader, payload: [UInt8]) {
        var writer = PayloadWriter()
        writer.name(name)
        return try call(opcode, payload: writer.bytes)
    }

    func write(_ handle: UInt32, epoch: UInt64, page: UInt64, _ data: [UInt8]) throws -> WireStatus? {
        try call(.write, volume: handle, epoch: epoch, page: page, pageCount: UInt32(data.count / WireLimits.pageSize),
                 payload: data).header.statusValue
    }

    func read(_ handle: UInt32, epoch: UInt64, page: UInt64, pageCount: UInt32) throws -> (status: WireStatus?, data: [UInt8]) {
        let reply = try call(.read, volume: handle, epoch: epoch, page: page, pageCount: pageCount)
        return (reply.header.statusValue, reply.payload)
    }

    func trim(_ handle: UInt32, epoch: UInt64, page: UInt64, pageCount: UInt32) throws -> WireStatus? {
        try call(.trim, volume: handle, epoch: epoch, page: page, pageCount: pageCount).header.statusValue
    }

    /// SERVER_STAT's fields.
    func serverStat() throws -> (capacityFrames: UInt64, usedFrames: UInt64, volumes: UInt32, connections: UInt32, requests: UInt64) {
        let stat = try control.serverStat()
        return (stat.capacityFrames, stat.usedFrames, stat.volumeCount, stat.connectionCount, stat.requestsServed)
    }

    /// VOLUME_STAT's fields, or the status and zeros if the server refused.
    func stat(_ name: String) throws -> (status: WireStatus?, sizeBytes: UInt64, storedPages: UInt64, epoch: UInt64, metadataVersion: UInt64) {
        do throws(ControlError) {
            let stat = try control.volumeStat(name)
            return (.ok, stat.sizeBytes, stat.storedPages, stat.epoch, stat.metadataVersion)
        } catch let error where error.status != nil {
            return (error.status, 0, 0, 0, 0)
        }
    }

    /// True once the server has closed this connection (EOF or reset on the next read).
    func isClosedByServer() -> Bool {
        do throws(ControlError) {
            _ = try control.receive()
            return false
        } catch .connectionLost {
            return true
        } catch {
            return false
        }
    }
}

/// A MemoryServer in this process on 127.0.0.1, a free port, stopped when the test ends.
final class InProcessServer {
    let server: MemoryServer

    init(memoryBytes: UInt64 = 64 << 20) throws {
        var logger = Logger(label: "memx-server-test")
        logger.logLevel = .critical
        server = try MemoryServer(listen: TCPAddress(host: "127.0.0.1", port: 0), memoryBytes: memoryBytes, logger: logger)
        try server.start()
    }

    var port: UInt16 { server.port }
    func client(hello: Bool = true) throws -> WireClient { try WireClient(port: port, hello: hello) }

    deinit { server.stop() }
}

/// Sleeps `millis` milliseconds (a poll with no descriptors).
func sleepMillis(_ millis: Int32) {
    var nothing: [pollfd] = []
    _ = try? Poll.waitReadable(&nothing, timeoutMillis: millis)
}

/// Page data that differs by page and by `seed`.
func pages(_ count: Int, seed: Int) -> [UInt8] {
    (0..<(count * WireLimits.pageSize)).map { UInt8(truncatingIfNeeded: ($0 &* 7) ^ (seed &* 151) ^ ($0 >> 12)) }
}

@Suite("memx-server in process")
struct MemoryServerTests {
    @Test("HELLO: magic, version and server id; a wrong version gets UNSUPPORTED_VERSION and the connection closes")
    func hello() throws {
        let host = try InProcessServer()
        let client = try host.client(hello: false)
        let reply = try client.call(.hello, payload: WireClient.helloPayload())
        #expect(reply.header.statusValue == .ok)
        var reader = PayloadReader(reply.payload)
        #expect(try reader.u64() == WireLimits.magic)
        #expect(try reader.u16() == WireLimits.version)
        _ = try reader.raw(2 + 4 + 16)  // flags, reserved, server nonce
        #expect(try reader.raw(16) == host.server.handler.serverID)
        #expect(try client.call(.ping, payload: [1, 2, 3]).payload == [1, 2, 3])

        for payload in [WireClient.helloPayload(version: 2), WireClient.helloPayload(magic: 0x1234)] {
            let old = try host.client(hello: false)
            let refused = try old.call(.hello, payload: payload)
            #expect(refused.header.statusValue == .unsupportedVersion)
            #expect(old.isClosedByServer())
        }
        let rude = try host.client(hello: false)
        try rude.send(FrameHeader(opcode: .ping, requestID: 1))
        #expect(rude.isClosedByServer(), "a request before HELLO closes the connection")
    }

    @Test("volumes: create, open, stat, list, close, delete; bad names and sizes are INVALID")
    func volumeLifecycle() throws {
        let host = try InProcessServer()
        let client = try host.client()
        #expect(try client.create("alpha", sizeBytes: 1 << 20) == .ok)
        #expect(try client.create("beta", sizeBytes: 64 << 10) == .ok)
        #expect(try client.create("alpha", sizeBytes: 1 << 20) == .exists)
        #expect(try client.create(".hidden", sizeBytes: 4096) == .invalid)
        #expect(try client.create("bad/name", sizeBytes: 4096) == .invalid)
        #expect(try client.create("odd", sizeBytes: 4097) == .invalid)
        #expect(try client.create("zero", sizeBytes: 0) == .invalid)
        #expect(try client.create("huge", sizeBytes: WireLimits.volumeBytesMax + 4096) == .invalid)

        let opened = try client.open("alpha")
        #expect(opened.status == .ok && opened.handle != 0 && opened.epoch == 1)
        var reader = PayloadReader(opened.payload)
        #expect(try reader.u64() == 1 << 20)
        #expect(try reader.u64() == 0)
        #expect(try reader.blob(limit: WireLimits.metadataBytesMax) == [])
        #expect(try client.open("missing").status == .notFound)

        #expect(try client.write(opened.handle, epoch: opened.epoch, page: 3, pages(2, seed: 1)) == .ok)
        let stat = try client.stat("alpha")
        #expect(stat.status == .ok && stat.sizeBytes == 1 << 20 && stat.storedPages == 2 && stat.epoch == 1)
        #expect(try client.stat("nope").status == .notFound)

        var list = PayloadReader(try client.call(.volumeList).payload)
        #expect(try list.u32() == 2)
        #expect(try [list.u64(), list.u64()] == [1 << 20, 2])
        #expect(try list.name() == "alpha")
        #expect(try [list.u64(), list.u64()] == [64 << 10, 0])
        #expect(try list.name() == "beta")
        try list.finish()

        #expect(try client.call(.volumeClose, volume: opened.handle, epoch: opened.epoch).header.statusValue == .ok)
        #expect(try client.write(opened.handle, epoch: opened.epoch, page: 0, pages(1, seed: 2)) == .fenced,
                "a closed lease fences its epoch")
        #expect(try client.call(.volumeClose, volume: 999, epoch: 1).header.statusValue == .notFound)

        #expect(try host.client().serverStat().usedFrames == 2)
        #expect(try client.named(.volumeDelete, "alpha").header.statusValue == .ok)
        #expect(try client.named(.volumeDelete, "alpha").header.statusValue == .notFound)
        #expect(try client.stat("alpha").status == .notFound)
        let after = try client.serverStat()
        #expect(after.usedFrames == 0 && after.volumes == 1)
        #expect(try client.read(opened.handle, epoch: opened.epoch, page: 0, pageCount: 1).status == .notFound)
        #expect(try client.create("alpha", sizeBytes: 4096) == .ok)
        #expect(try client.open("alpha").handle != opened.handle, "handles are never reused")
    }

    @Test("multi-page writes read back; unwritten pages read as zeros; ranges past the volume are INVALID")
    func readWrite() throws {
        let host = try InProcessServer()
        let client = try host.client()
        #expect(try client.create("data", sizeBytes: 256 * 4096) == .ok)
        let volume = try client.open("data")
        let data = pages(32, seed: 7)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 100, data) == .ok)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 100, pageCount: 32).data == data)
        let straddle = try client.read(volume.handle, epoch: volume.epoch, page: 90, pageCount: 12)
        #expect(straddle.status == .ok)
        #expect(straddle.data[..<(10 * 4096)].allSatisfy { $0 == 0 })
        #expect(Array(straddle.data[(10 * 4096)...]) == Array(data[..<(2 * 4096)]))
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 101, pages(1, seed: 8)) == .ok)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 101, pageCount: 1).data == pages(1, seed: 8))

        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 250, pageCount: 7).status == .invalid)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: UInt64.max, pageCount: 1).status == .invalid)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 0, pageCount: 0).status == .invalid)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 0, pageCount: 33).status == .invalid)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 255, pages(2, seed: 1)) == .invalid)
        #expect(try client.trim(volume.handle, epoch: volume.epoch, page: 0, pageCount: WireLimits.trimPagesMax + 1) == .invalid)
        #expect(try client.read(volume.handle &+ 77, epoch: volume.epoch, page: 0, pageCount: 1).status == .notFound)
    }

    @Test("TRIM frees frames: used frames drop and the pages read as zeros")
    func trimFreesFrames() throws {
        let host = try InProcessServer()
        let client = try host.client()
        #expect(try client.create("t", sizeBytes: 1 << 30) == .ok)
        let volume = try client.open("t")
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 0, pages(8, seed: 3)) == .ok)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 200_000, pages(4, seed: 4)) == .ok)
        #expect(try client.serverStat().usedFrames == 12)
        #expect(try client.trim(volume.handle, epoch: volume.epoch, page: 2, pageCount: 4) == .ok)
        #expect(try client.serverStat().usedFrames == 8)
        let after = try client.read(volume.handle, epoch: volume.epoch, page: 0, pageCount: 8).data
        #expect(after[(2 * 4096)..<(6 * 4096)].allSatisfy { $0 == 0 })
        #expect(after[..<(2 * 4096)] == pages(8, seed: 3)[..<(2 * 4096)])
        // A TRIM far larger than what is stored walks the map, not the range.
        #expect(try client.trim(volume.handle, epoch: volume.epoch, page: 0, pageCount: (1 << 30) / 4096) == .ok)
        #expect(try client.serverStat().usedFrames == 0)
        #expect(try client.stat("t").storedPages == 0)
        // Freed frames are reused.
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 9, pages(3, seed: 5)) == .ok)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 9, pageCount: 3).data == pages(3, seed: 5))
    }

    @Test("a server of 8 frames answers FULL on the 9th page and applies nothing of that request")
    func fullServer() throws {
        let host = try InProcessServer(memoryBytes: 8 * 4096)
        let client = try host.client()
        #expect(try client.create("small", sizeBytes: 64 * 4096) == .ok)
        let volume = try client.open("small")
        let first = pages(6, seed: 11)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 0, first) == .ok)
        // Pages 5...8: page 5 exists, 6, 7, 8 are new but only 2 frames are free.
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 5, pages(4, seed: 12)) == .full)
        #expect(try client.read(volume.handle, epoch: volume.epoch, page: 0, pageCount: 9).data == first + [UInt8](repeating: 0, count: 3 * 4096))
        #expect(try client.serverStat().usedFrames == 6)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 6, pages(2, seed: 13)) == .ok)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 8, pages(1, seed: 14)) == .full)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 0, pages(8, seed: 15)) == .ok, "overwrites need no frame")
        let stat = try client.serverStat()
        #expect(stat.capacityFrames == 8 && stat.usedFrames == 8)
        #expect(try client.trim(volume.handle, epoch: volume.epoch, page: 0, pageCount: 1) == .ok)
        #expect(try client.write(volume.handle, epoch: volume.epoch, page: 8, pages(1, seed: 14)) == .ok)
    }

    @Test("epoch fencing: a second open fences the first holder; a minimum epoch is honoured")
    func epochFencing() throws {
        let host = try InProcessServer()
        let first = try host.client()
        let second = try host.client()
        #expect(try first.create("leased", sizeBytes: 16 * 4096) == .ok)
        let a = try first.open("leased")
        #expect(try first.write(a.handle, epoch: a.epoch, page: 0, pages(1, seed: 1)) == .ok)
        let b = try second.open("leased")
        #expect(b.handle == a.handle && b.epoch == a.epoch + 1)
        #expect(try first.write(a.handle, epoch: a.epoch, page: 0, pages(1, seed: 2)) == .fenced)
        #expect(try first.read(a.handle, epoch: a.epoch, page: 0, pageCount: 1).status == .fenced)
        #expect(try first.trim(a.handle, epoch: a.epoch, page: 0, pageCount: 1) == .fenced)
        #expect(try first.call(.volumeClose, volume: a.handle, epoch: a.epoch).header.statusValue == .fenced)
        #expect(try second.read(b.handle, epoch: b.epoch, page: 0, pageCount: 1).data == pages(1, seed: 1))
        #expect(try second.read(b.handle, epoch: b.epoch + 1, page: 0, pageCount: 1).status == .invalid,
                "an epoch the server never issued")
        let c = try first.open("leased", minimumEpoch: 100)
        #expect(c.epoch == 100)
        #expect(try first.open("leased", minimumEpoch: 5).epoch == 101)
        #expect(try second.write(b.handle, epoch: b.epoch, page: 0, pages(1, seed: 3)) == .fenced)
    }

    @Test("METADATA_PUT is a compare-and-swap on the version; OPEN returns the stored metadata")
    func metadataConflict() throws {
        let host = try InProcessServer()
        let client = try host.client()
        #expect(try client.create("meta", sizeBytes: 4096) == .ok)
        let volume = try client.open("meta")
        func put(_ expected: UInt64, _ new: UInt64, _ bytes: [UInt8], epoch: UInt64? = nil) throws -> WireStatus? {
            var writer = PayloadWriter()
            writer.u64(expected)
            writer.u64(new)
            writer.blob(bytes)
            return try client.call(.metadataPut, volume: volume.handle, epoch: epoch ?? volume.epoch, payload: writer.bytes)
                .header.statusValue
        }
        let table = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 * 13) }
        #expect(try put(0, 1, table) == .ok)
        #expect(try put(0, 2, [9]) == .conflict)
        #expect(try put(1, 2, [9], epoch: volume.epoch - 1) == .fenced)
        #expect(try client.stat("meta").metadataVersion == 1)
        let reopened = try client.open("meta")
        var reader = PayloadReader(reopened.payload)
        #expect(try reader.u64() == 4096)
        #expect(try reader.u64() == 1)
        #expect(try reader.blob(limit: WireLimits.metadataBytesMax) == table)
        #expect(try put(1, 2, [9]) == .fenced, "the reopen raised the epoch")
    }

    @Test("16 clients at once, each with many requests in flight, replies matched by id: all data verifies")
    func pipelinedClients() throws {
        let host = try InProcessServer()
        let setup = try host.client()
        #expect(try setup.create("shared", sizeBytes: 16 * 64 * 4096) == .ok)
        let volume = try setup.open("shared")
        let port = host.port
        let failures = Mutex<[String]>([])
        var threads: [OSThread] = []
        for index in 0..<16 {
            threads.append(try OSThread(name: "client-\(index)") {
                do {
                    try Self.pipelinedSession(port: port, handle: volume.handle, epoch: volume.epoch, index: index)
                } catch {
                    failures.withLock { $0.append("client \(index): \(error)") }
                }
            })
        }
        for thread in threads { thread.join() }
        #expect(failures.withLock { $0 } == [])
        #expect(try setup.serverStat().requests > 16 * 300)
    }

    /// One client's pipelined run: a sender thread keeps up to `inFlightMax` requests
    /// outstanding (writes and reads of the client's own 64 pages, seeded); this thread
    /// receives the replies and checks each read against what was written before it was sent.
    static func pipelinedSession(port: UInt16, handle: UInt32, epoch: UInt64, index: Int) throws {
        let client = try WireClient(port: port)
        let firstPage = UInt64(index * 64)
        let requestCount = 300
        let window = DispatchSemaphore(value: WireLimits.inFlightMax)
        let expected = Mutex<[UInt64: (opcode: Opcode, data: [UInt8])]>([:])
        let sendError = Mutex<String?>(nil)
        let sender = try OSThread(name: "sender-\(index)") {
            var random = SeededRandom(seed: TestEnvironment.seed(default: 0x5049_5045) &+ UInt64(index))
            var model = [UInt8](repeating: 0, count: 64 * 4096)
            do {
                for _ in 0..<requestCount {
                    window.wait()
                    let page = Int.random(in: 0..<60, using: &random)
                    let count = Int.random(in: 1...4, using: &random)
                    let range = (page * 4096)..<((page + count) * 4096)
                    let id = client.makeID()
                    var header = FrameHeader(opcode: .read, requestID: id, volume: handle, pageCount: UInt32(count),
                                             epoch: epoch, page: firstPage + UInt64(page))
                    if random.chance(1, in: 2) {
                        header.opcode = Opcode.write.rawValue
                        let data = random.bytes(count * 4096)
                        model.replaceSubrange(range, with: data)
                        expected.withLock { $0[id] = (.write, []) }
                        try client.send(header, payload: data)
                    } else {
                        expected.withLock { $0[id] = (.read, Array(model[range])) }
                        try client.send(header)
                    }
                }
            } catch {
                sendError.withLock { $0 = "send: \(error)" }
            }
        }
        defer { sender.join() }
        for _ in 0..<requestCount {
            let reply = try client.receive()
            window.signal()
            guard let want = expected.withLock({ $0.removeValue(forKey: reply.header.requestID) }) else {
                throw BackendProcessError("reply to unknown request \(reply.header.requestID)")
            }
            guard reply.header.statusValue == .ok, reply.header.opcode == want.opcode.rawValue else {
                throw BackendProcessError("request \(reply.header.requestID): \(reply.header)")
            }
            if want.opcode == .read, reply.payload != want.data {
                throw BackendProcessError("read \(reply.header.requestID) returned other data")
            }
        }
        if let error = sendError.withLock({ $0 }) { throw BackendProcessError(error) }
    }

    @Test("an oversized or malformed frame closes only its own connection; another client's session goes on")
    func malformedFrameIsolation() throws {
        let host = try InProcessServer()
        let good = try host.client()
        #expect(try good.create("iso", sizeBytes: 64 * 4096) == .ok)
        let volume = try good.open("iso")
        #expect(try good.write(volume.handle, epoch: volume.epoch, page: 0, pages(2, seed: 21)) == .ok)

        let oversized = try host.client()
        try oversized.send(FrameHeader(opcode: .ping, requestID: 1), length: UInt32(WireLimits.smallPayloadBytesMax + 1))
        #expect(oversized.isClosedByServer())

        let wrongWrite = try host.client()  // 2 pages announced, 1 page sent: the length fits, the payload does not
        try wrongWrite.send(FrameHeader(opcode: .write, requestID: 1, volume: volume.handle, pageCount: 2, epoch: volume.epoch),
                            payload: pages(1, seed: 22))
        #expect(wrongWrite.isClosedByServer())

        let trailing = try host.client()
        var writer = PayloadWriter()
        writer.name("iso")
        writer.u16(0)
        try trailing.send(FrameHeader(opcode: .volumeStat, requestID: 1), payload: writer.bytes)
        #expect(trailing.isClosedByServer())

        #expect(try good.read(volume.handle, epoch: volume.epoch, page: 0, pageCount: 2).data == pages(2, seed: 21))
        #expect(try good.call(.ping, payload: [7]).payload == [7])
    }

    @Test("an unknown opcode is answered UNSUPPORTED and the connection stays usable")
    func unknownOpcode() throws {
        let host = try InProcessServer()
        let client = try host.client()
        try client.send(FrameHeader(length: 0, rawOpcode: 77, rawStatus: 0, requestID: 500, volume: 0, pageCount: 0,
                                    epoch: 0, page: 0), payload: [1, 2, 3, 4])
        let reply = try client.receive()
        #expect(reply.header.requestID == 500 && reply.header.opcode == 77)
        #expect(reply.header.statusValue == .unsupported && reply.payload.isEmpty)
        #expect(try client.call(.ping, payload: [42]).payload == [42])
        #expect(host.server.counters.requests(for: nil) == 1)
    }

    @Test("metrics: GET /metrics answers the Prometheus text format; other paths are 404")
    func metrics() throws {
        let host = try InProcessServer(memoryBytes: 1 << 20)
        let client = try host.client()
        #expect(try client.create("m", sizeBytes: 4096) == .ok)
        var logger = Logger(label: "metrics-test")
        logger.logLevel = .critical
        let metrics = try MetricsResponder(listen: TCPAddress(host: "127.0.0.1", port: 0), server: host.server, logger: logger)
        try metrics.start()
        defer { metrics.stop() }
        func get(_ path: String) throws -> String {
            try Self.exchange(try TCPConnection(connectingTo: metrics.address), Array("GET \(path) HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        }
        let text = try get("/metrics")
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.contains("\nmemx_server_capacity_bytes 1048576\n"))
        #expect(text.contains("\nmemx_server_frames_capacity 256\n"))
        #expect(text.contains("\nmemx_server_volumes 1\n"))
        #expect(text.contains("memx_server_requests_total{opcode=\"VOLUME_CREATE\"} 1\n"))
        #expect(try get("/other").hasPrefix("HTTP/1.1 404"))
    }

    @Test("RequestHandler without sockets: pages land in the caller's buffer; a short WRITE payload is malformed")
    func handlerWithoutSockets() throws {
        let store = try VolumeStore(arena: try PageArena(capacityBytes: 1 << 20))
        let handler = RequestHandler(store: store, counters: ServerCounters(), serverID: [UInt8](repeating: 1, count: 16))
        var handshake = Handshake()
        try store.create(name: "pure", sizeBytes: 8 * 4096)
        let volume = try store.open(name: "pure", minimumEpoch: 0)
        var pageBuffer = [UInt8](repeating: 0xff, count: Int(WireLimits.pagesPerRequestMax) * 4096)
        let data = pages(2, seed: 31)
        let write = FrameHeader(length: UInt32(data.count), opcode: .write, requestID: 1, volume: volume.handle,
                                pageCount: 2, epoch: volume.epoch, page: 3)
        let written = try data.withUnsafeBytes { payload in
            try pageBuffer.withUnsafeMutableBytes { try handler.handle(write, payload: payload, pageBuffer: $0, handshake: &handshake) }
        }
        #expect(written == Reply.status(.ok, to: write))
        let read = FrameHeader(opcode: .read, requestID: 2, volume: volume.handle, pageCount: 3, epoch: volume.epoch, page: 2)
        let answer = try pageBuffer.withUnsafeMutableBytes { try handler.handle(read, payload: UnsafeRawBufferPointer(start: nil, count: 0), pageBuffer: $0, handshake: &handshake) }
        #expect(answer.payload == .pageBuffer(count: 3 * 4096) && answer.header.length == 3 * 4096)
        #expect(Array(pageBuffer[..<4096]) == [UInt8](repeating: 0, count: 4096))
        #expect(Array(pageBuffer[4096..<(3 * 4096)]) == data)
        let short = FrameHeader(length: 4096, opcode: .write, requestID: 3, volume: volume.handle, pageCount: 2,
                                epoch: volume.epoch, page: 0)
        #expect(throws: FrameError.self) {
            try data[..<4096].withUnsafeBytes { payload in
                try pageBuffer.withUnsafeMutableBytes { try handler.handle(short, payload: payload, pageBuffer: $0, handshake: &handshake) }
            }
        }
        #expect(store.arena.usedFrames == 2)
    }

    @Test("stop() closes every client connection and returns once every thread has ended")
    func stopClosesConnections() throws {
        var logger = Logger(label: "memx-server-test")
        logger.logLevel = .critical
        let server = try MemoryServer(listen: TCPAddress(host: "127.0.0.1", port: 0), memoryBytes: 1 << 20, logger: logger)
        try server.start()
        let clients = try (0..<3).map { _ in try WireClient(port: server.port) }
        let silent = try WireClient(port: server.port, hello: false)  // still in its handshake
        for _ in 0..<200 where server.counters.connectionsOpen < 4 { sleepMillis(10) }
        #expect(server.counters.connectionsOpen == 4)
        server.stop()
        for client in clients + [silent] { #expect(client.isClosedByServer()) }
        #expect(server.counters.connectionsOpen == 0)
        #expect(throws: (any Error).self) { try WireClient(port: server.port) }
    }

    /// Sends `request` on `http` and returns everything received until the server closes.
    static func exchange(_ http: consuming TCPConnection, _ request: [UInt8]) throws -> String {
        try http.setTimeouts(receiveMillis: 5000, sendMillis: 5000)
        try request.withUnsafeBytes { raw in try http.send(raw) }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = try chunk.withUnsafeMutableBytes { raw in try http.receiveSome(into: raw) }
            if n == 0 { break }
            response += chunk[..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }
}
