import Foundation
import GuestMemory
import LinuxSystem
import MemxTesting
import Testing
import VhostUser
import Virtio

/// A real memx-vhost process driven over its socket by the Swift frontend (what QEMU does),
/// including the hostile cases of research/vhost-user.md §4 tier 1.
final class Backend {
    let directory: String
    let socket: String
    let volume: String
    let size: String
    var process: BackendProcess?

    init(_ name: String, size: String = "64M", volume: String? = nil, extra: [String] = []) throws {
        directory = try BackendProcess.temporaryDirectory(name)
        socket = directory + "/vu.sock"
        self.volume = volume ?? "itest-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        self.size = size
        try start(extra: extra)
    }

    func start(extra: [String] = []) throws {
        process = try BackendProcess(socketPath: socket,
                                     arguments: ["--size", size, "--volume", volume, "--queues", "4",
                                                 "--serial", "itest-serial", "--log-level", "debug"] + extra,
                                     logPath: directory + "/backend.log")
    }

    func connect(options: FrontendOptions = FrontendOptions()) throws -> FrontendClient {
        try FrontendClient.connect(socketPath: socket, guestRAM: try GuestRAM(sizeBytes: 64 << 20), options: options)
    }

    var log: String { process?.log ?? "" }

    deinit {
        _ = try? process?.stop(signal: SIGKILL)
        unlink("/dev/shm/memx-\(volume).pool")
        unlink("/dev/shm/memx-\(volume).cache")
        try? FileManager.default.removeItem(atPath: directory)
    }
}

func pattern(_ seed: Int, _ count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ (seed &* 131) ^ ($0 >> 9)) }
}

@Suite("memx-vhost over its socket")
struct FrontendIntegrationTests {
    @Test("handshake as QEMU 7.2 does it; config, serial, data through two queues; flush; clean SIGTERM")
    func basicSession() throws {
        let backend = try Backend("basic")
        let client = try backend.connect()
        #expect(client.config?.capacitySectors == (64 << 20) / 512)
        #expect(client.config?.segMax == 126)
        #expect(client.queueCountMax == 4)
        #expect(client.memorySlotsMax == 509)
        #expect(client.protocolFeatures.contains([.replyAck, .config, .inflightSharedMemory, .configureMemSlots]))
        #expect(client.backendFeatures.contains([.logAll, .eventIndex, .indirectDescriptors, .version1]))
        let queues = try client.start(queues: 2, queueSize: 128)
        #expect(try queues[0].deviceID().1 == Array("itest-serial".utf8))
        for (i, queue) in queues.enumerated() {
            let data = pattern(i, 64 << 10)
            #expect(try queue.write(sector: UInt64(i) * 1024, data: data).isOK)
            #expect(try queue.perform(.flush).isOK)
            let (completion, back) = try queue.read(sector: UInt64(i) * 1024, byteCount: data.count)
            #expect(completion.isOK && completion.usedLength == UInt32(data.count + 1))
            #expect(back == data)
        }
        #expect(try client.stop().count == 2)
        #expect(try backend.process!.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: backend.socket), "socket not removed on SIGTERM")
    }

    @Test("GET_CONFIG answers exactly the size asked (36, 48, 57, 96); SET_CONFIG toggles wce; SET_MEM_TABLE path")
    func configAndMemTable() throws {
        let backend = try Backend("config")
        var options = FrontendOptions()
        options.forceSetMemTable = true
        options.acknowledgement = .everyMessage
        let client = try backend.connect(options: options)
        for size: UInt32 in [36, 48, 57, 96] {
            let config = try client.readConfig(size: size)
            #expect(client.configBytes.count == Int(size))
            #expect(config.capacitySectors == (64 << 20) / 512)
        }
        #expect(client.configBytes[60...].allSatisfy { $0 == 0 }, "fields past write_zeroes_may_unmap must read 0")
        #expect(try client.readConfig(size: 57).writeCacheEnabled)
        try client.setWriteCache(enabled: false)
        #expect(try !client.readConfig(size: 57).writeCacheEnabled)
        // A SET_CONFIG of anything but wce is refused (REPLY_ACK failure), the session goes on.
        #expect(throws: FrontendError.self) {
            try client.sendAcknowledged(.setConfig(ConfigAccess(offset: 0, size: 8, flags: 0, bytes: [UInt8](repeating: 0, count: 8))))
        }
        let queue = try client.start(queues: 1, queueSize: 256)[0]
        #expect(try queue.write(sector: 2, data: pattern(5, 1024)).isOK)
        #expect(try queue.read(sector: 2, byteCount: 1024).1 == pattern(5, 1024))
    }

    @Test("indirect descriptors and QD32: out-of-order completion bookkeeping holds")
    func indirectDeepQueue() throws {
        let backend = try Backend("indirect")
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.descriptorLayout = .indirect
        options.dataBytesPerSlot = 4096
        let queue = try client.start(queues: 1, queueSize: 64, queueOptions: options)[0]
        for round in 0..<4 {
            for i in 0..<32 {
                try queue.submit(.write(sector: UInt64(i * 8), byteCount: 4096), data: pattern(round * 100 + i, 4096), kick: false)
            }
            queue.kickIfNeeded()
            var ok = 0
            try queue.waitForCompletions(minimum: 32) { if $0.isOK { ok += 1 } }
            #expect(ok == 32)
        }
        for i in 0..<32 {
            #expect(try queue.read(sector: UInt64(i * 8), byteCount: 4096).1 == pattern(300 + i, 4096))
        }
    }

    @Test("duplicate SET_FEATURES and SET_VRING_CALL, a new call fd while running, ENABLE on never-started queues")
    func duplicatesAndIdleQueues() throws {
        let backend = try Backend("dups")
        let client = try backend.connect()
        let queue = try client.start(queues: 1, queueSize: 128)[0]
        let features = try #require(client.ackedFeatures)
        try client.sendAcknowledged(.setFeatures(features.rawValue))
        try client.sendAcknowledged(.setFeatures(features.rawValue))
        try client.sendAcknowledged(.setVringEnable(VringState(index: 3, num: 1)))
        try client.sendAcknowledged(.setVringEnable(VringState(index: 3, num: 0)))
        try client.sendAcknowledged(.setVringCall(VringDescriptorPayload(index: 0, hasFileDescriptor: true)),
                                    fds: [queue.call.rawValue])
        try client.sendAcknowledged(.setVringCall(VringDescriptorPayload(index: 0, hasFileDescriptor: true)),
                                    fds: [queue.call.rawValue])
        // A never-started ring answers GET_VRING_BASE with its base and is not disturbed.
        let idle = try client.request(.getVringBase(VringState(index: 2, num: 0))).vringState()
        #expect(idle.index == 2 && idle.num == 0)
        #expect(try queue.write(sector: 8, data: pattern(1, 4096)).isOK)
        #expect(try queue.read(sector: 8, byteCount: 4096).1 == pattern(1, 4096))
    }

    @Test("GET_VRING_BASE with requests in flight: every popped request completes before the reply")
    func stopDrains() throws {
        let backend = try Backend("drain")
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 128 << 10
        options.slotCount = 64
        options.descriptorLayout = .indirect
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        for i in 0..<64 {
            try queue.submit(.write(sector: UInt64(i) * 256, byteCount: 128 << 10), data: pattern(i, 128 << 10), kick: false)
        }
        queue.kickIfNeeded()
        let base = try client.stop(queue: 0)
        // The backend replied: it must have consumed exactly what it completed.
        #expect(UInt16(truncatingIfNeeded: base) == queue.driver.deviceUsedIndex)
        var ok = 0
        _ = try queue.reapCompletions { if $0.isOK { ok += 1 } }
        // Restart over the same rings and finish whatever was not consumed before the stop.
        try client.start(resuming: [queue], vringBases: [UInt16(truncatingIfNeeded: base)])
        if queue.outstanding > 0 {
            try queue.waitForCompletions(minimum: queue.outstanding) { if $0.isOK { ok += 1 } }
        }
        #expect(ok == 64)
        for i in stride(from: 0, to: 64, by: 9) {
            #expect(try queue.read(sector: UInt64(i) * 256, byteCount: 128 << 10).1 == pattern(i, 128 << 10))
        }
    }

    @Test("ADD_MEM_REG and REM_MEM_REG while another thread does I/O; REM of an unknown region is refused")
    func memoryHotplugDuringIO() throws {
        let backend = try Backend("hotplug")
        let client = try backend.connect()
        let queue = try client.start(queues: 1, queueSize: 128)[0]
        let box = UncheckedQueue(queue)
        let worker = Thread {
            do {
                for i in 0..<300 {
                    let data = pattern(i, 4096)
                    guard try box.queue.write(sector: UInt64(i % 64) * 8, data: data).isOK,
                          try box.queue.read(sector: UInt64(i % 64) * 8, byteCount: 4096).1 == data
                    else { box.failure = "data mismatch at \(i)"; return }
                }
            } catch { box.failure = "\(error)" }
            box.done = true
        }
        worker.start()
        for round in 0..<20 {
            let fd = try MemFD.create(name: "hotplug", size: 2 << 20)
            let layout = MemoryRegionLayout(guestAddress: GuestAddress(0x1_0000_0000 + UInt64(round) * (4 << 20)),
                                            size: 2 << 20, frontendAddress: FrontendAddress(0x6000_0000_0000 + UInt64(round) << 24),
                                            mmapOffset: 0)
            try client.sendAcknowledged(.addMemReg(layout), fds: [fd.rawValue])
            try client.sendAcknowledged(.remMemReg(layout))
        }
        while !box.done && box.failure == nil { usleep(1000) }
        #expect(box.failure == nil, "\(box.failure ?? "")")
        let bogus = MemoryRegionLayout(guestAddress: GuestAddress(0x7_0000_0000), size: 4096,
                                       frontendAddress: FrontendAddress(0x1234_0000), mmapOffset: 0)
        #expect(throws: FrontendError.self) { try client.sendAcknowledged(.remMemReg(bogus)) }
        #expect(try queue.write(sector: 0, data: pattern(7, 512)).isOK)
    }

    @Test("dirty log: SET_LOG_BASE + LOG_ALL marks data, status and used ring; a swapped log takes over")
    func dirtyLogging() throws {
        let backend = try Backend("dirtylog")
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.slotCount = 8
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        #expect(try queue.write(sector: 0, data: pattern(3, 8192)).isOK)
        let logBytes = UInt64((64 << 20) / 4096 / 8)
        func installLog() throws -> DirtyLog {
            let fd = try MemFD.create(name: "dirty-log", size: Int(logBytes))
            try client.send(.setLogBase(LogArea(mmapSize: logBytes, mmapOffset: 0)), fds: [fd.rawValue])
            _ = try client.receiveReply(expecting: .setLogBase)
            return try DirtyLog(fd: fd, size: logBytes, offset: 0)
        }
        let first = try installLog()
        let features = try #require(client.ackedFeatures)
        try client.sendAcknowledged(.setFeatures(features.union(.logAll).rawValue))
        let (completion, data) = try queue.read(sector: 0, byteCount: 8192)
        #expect(completion.isOK && data == pattern(3, 8192))
        let dataAddress = queue.area.dataAddress(slot: completion.slot)
        #expect(first.isDirty(dataAddress))
        #expect(first.isDirty(GuestAddress(dataAddress.rawValue + 8191)))
        #expect(first.isDirty(queue.area.statusAddress(slot: completion.slot)))
        #expect(first.isDirty(GuestAddress(queue.area.ringLayout.usedRing.rawValue + 2)))
        #expect(!first.isDirty(GuestAddress(0)), "a page the device never wrote is marked")
        // A write request only reads guest data: its data pages stay clean in a fresh log.
        let second = try installLog()
        #expect(try queue.write(sector: 64, data: pattern(4, 4096)).isOK)
        let (c2, _) = try queue.read(sector: 64, byteCount: 4096)
        #expect(second.isDirty(queue.area.dataAddress(slot: c2.slot)))
        #expect(second.isDirty(queue.area.statusAddress(slot: c2.slot)))
    }

    @Test("malformed chains get length 0 or IOERR, never a crash; the queue keeps serving")
    func malformedChains() throws {
        let backend = try Backend("malformed")
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.slotCount = 16
        let queue = try client.start(queues: 1, queueSize: 64, queueOptions: options)[0]
        let size = queue.queueSize
        // Descriptors 60..63 are never used by the client's 16 slots: hostile chains live there.
        queue.driver.writeDescriptor(60, Descriptor(address: 0x10000, length: 16, flags: Descriptor.flagNext, next: 61))
        queue.driver.writeDescriptor(61, Descriptor(address: 0x10000, length: 16, flags: Descriptor.flagNext, next: 60))  // loop
        queue.driver.writeDescriptor(62, Descriptor(address: 0xffff_ffff_0000, length: 4096, flags: Descriptor.flagWrite, next: 0))
        queue.driver.writeDescriptor(63, Descriptor(address: 0x10000, length: 17, flags: Descriptor.flagIndirect, next: 0))
        for head: UInt16 in [60, 62, 63] { queue.driver.publish(head: head) }
        queue.kick.signal()
        var seen: [UInt16: UInt32] = [:]
        let deadline = Date().addingTimeInterval(5)
        while seen.count < 3 && Date() < deadline {
            if let used = queue.driver.popUsed(releasing: false) { seen[used.head] = used.length } else { usleep(100) }
        }
        #expect(seen == [60: 0, 62: 0, 63: 0])
        _ = size
        // A request with a header shorter than 16 bytes but a status byte gets IOERR.
        let short = try queue.perform(.raw(type: 0, sector: 0, readableBytes: 0, writableBytes: 0))
        #expect(short.statusByte == 0)  // FLUSH-like 16-byte header with type 0 and no data: an empty read
        #expect(try queue.perform(.raw(type: 77, sector: 0, readableBytes: 0, writableBytes: 0)).statusByte == 2)
        #expect(try queue.write(sector: 0, data: pattern(9, 4096)).isOK)
        #expect(backend.log.contains("malformed descriptor chain"))
        // An avail index more than a queue ahead breaks the ring: the backend says so on the
        // SET_VRING_ERR eventfd and stops serving that queue, and nothing else.
        queue.driver.forceAvailIndex(queue.driver.nextAvail &+ 1000)
        queue.kick.signal()
        var fds = [Poll.readable(queue.errorNotifier.rawValue)]
        #expect(try Poll.waitReadable(&fds, timeoutMillis: 5000) == 1, "no SET_VRING_ERR signal")
        #expect(backend.process!.process.isRunning)
        #expect(try client.request(.getQueueNum).u64() == 4)
    }

    @Test("bad messages: unknown request refused with an ack, bad header or size closes only that connection")
    func badMessages() throws {
        let backend = try Backend("badmsg")
        var options = FrontendOptions()
        options.replyTimeout = .seconds(3)
        let client = try backend.connect(options: options)
        try client.send(.unsupported(.getStatus), needReply: true)  // GET_STATUS: STATUS not negotiated
        #expect(try client.receiveReply(expecting: .getStatus).u64() != 0)
        var unknown: [UInt8] = []
        MessageHeader(request: 99, flags: 0x9, size: 0).encode(into: &unknown)
        try client.sendRaw(bytes: unknown)
        #expect(try client.receiveAny().u64() != 0)
        #expect(try client.request(.getQueueNum).u64() == 4)
        // A SET_VRING_NUM with a 3-byte payload: the connection is closed.
        var bad: [UInt8] = []
        MessageHeader(request: FrontendRequest.setVringNum.rawValue, flags: 1, size: 3).encode(into: &bad)
        try client.sendRaw(bytes: bad + [1, 2, 3])
        #expect(throws: FrontendError.self) { _ = try client.request(.getFeatures) }
        // The backend keeps listening: a new frontend gets a full session.
        let second = try backend.connect()
        let queue = try second.start(queues: 1, queueSize: 128)[0]
        #expect(try queue.write(sector: 0, data: pattern(2, 4096)).isOK)
        // A header with version 2 and an oversized payload are refused the same way.
        let third = try FrontendClient(socketPath: backend.socket, guestRAM: try GuestRAM(sizeBytes: 1 << 20), options: options)
        var v2: [UInt8] = []
        MessageHeader(request: 1, flags: 2, size: 0).encode(into: &v2)
        try third.sendRaw(bytes: v2)
        #expect(throws: FrontendError.self) { _ = try third.receiveAny() }
    }

    @Test("backend killed -9 with a request in flight: the new process resubmits it from the inflight region")
    func reconnectWithInflight() throws {
        let backend = try Backend("inflight")
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.slotCount = 8
        options.dataBytesPerSlot = 4096
        let queue = try client.start(queues: 1, queueSize: 64, queueOptions: options)[0]
        let inflight = try #require(client.inflight)
        #expect(try queue.write(sector: 0, data: pattern(1, 4096)).isOK)
        _ = try backend.process!.stop(signal: SIGKILL)

        // While no backend runs, the guest makes two writes available: H1 (sector 8) and H2 (sector 16).
        try queue.submit(.write(sector: 8, byteCount: 4096), data: pattern(8, 4096), kick: false)
        try queue.submit(.write(sector: 16, byteCount: 4096), data: pattern(16, 4096), kick: false)
        let layout = queue.area.ringLayout
        let nextAvail = queue.driver.nextAvail
        func head(_ availIndex: UInt16) throws -> UInt16 {
            let bytes = try queue.guestRAM.read(GuestAddress(layout.availRing.rawValue + 4 + 2 * UInt64(availIndex % layout.size)), count: 2)
            return UInt16(bytes[0]) | UInt16(bytes[1]) << 8
        }
        let h1 = try head(nextAvail &- 2), h2 = try head(nextAvail &- 1)
        // Stage what a crash mid-batch leaves: the old backend popped both, completed H2 (its used
        // element is published) and died with H1 still in flight.
        let used = queue.driver.deviceUsedIndex
        let element = GuestAddress(layout.usedRing.rawValue + 4 + 8 * UInt64(used % layout.size))
        try queue.guestRAM.write(element, [UInt8(h2 & 0xff), UInt8(h2 >> 8), 0, 0, 1, 0, 0, 0])
        try queue.guestRAM.write(GuestAddress(layout.usedRing.rawValue + 2), [UInt8((used &+ 1) & 0xff), UInt8((used &+ 1) >> 8)])
        let area = try SharedMemoryArea(fd: FileDescriptor(adopting: dup(inflight.file.rawValue)),
                                        size: inflight.area.mmapSize, offset: inflight.area.mmapOffset)
        let region = try #require(InflightQueue(area: area, queueIndex: 0, queueSize: layout.size))
        region.markSubmitted(h1, counter: 1_000)
        region.markSubmitted(h2, counter: 1_001)
        region.markCompleted(h2)
        region.setUsedIndex(used &+ 1)

        try backend.start()
        let reconnected = try FrontendClient.connect(socketPath: backend.socket, guestRAM: queue.guestRAM)
        // QEMU's choice after a lost backend: base = used->idx (virtio_queue_restore_last_avail_idx).
        try reconnected.start(resuming: [queue], inflight: inflight)
        var completions: [UInt16] = []
        try queue.waitForCompletions(minimum: 2) { completions.append($0.head) }
        #expect(completions == [h2, h1])
        // H1 ran exactly once after the restart; H2, which "completed" before the crash, was not re-run.
        #expect(try queue.read(sector: 8, byteCount: 4096).1 == pattern(8, 4096))
        #expect(try queue.read(sector: 16, byteCount: 4096).1 == [UInt8](repeating: 0, count: 4096))
        #expect(try queue.read(sector: 0, byteCount: 4096).1 == pattern(1, 4096))
        #expect(backend.log.contains("resubmitting 1 in-flight"))
    }

    @Test("command line: bad flags exit 2 with one line; an existing volume of another size is refused")
    func commandLine() throws {
        let binary = try BackendProcess.binaryPath()
        for args in [["--size", "1G"], ["--socket", "/tmp/x.sock", "--size", "12Q"], ["--socket", "/tmp/x.sock", "--size", "1G", "--queues", "0"],
                     ["--socket", "/tmp/x.sock", "--size", "1G", "--log-level", "loud"], ["--bogus"],
                     ["--socket", "/tmp/x.sock", "--size", "1G", "--volume", "../etc"]] {
            let (status, output) = try runCommand(binary, args, timeoutSeconds: 10)
            #expect(status == 2, "\(args): status \(status)")
            #expect(output.split(separator: "\n").count == 1 && output.hasPrefix("memx-vhost: "), "\(args): \(output)")
        }
        let backend = try Backend("cli")
        _ = try backend.process!.stop()
        let (status, output) = try runCommand(binary, ["--socket", backend.socket, "--size", "128M", "--volume", backend.volume],
                                              timeoutSeconds: 10)
        #expect(status == 1 && output.contains("pass --size 67108864"), "\(output)")
    }
}

/// Hands a queue client to one other thread (the test waits for it before touching it again).
final class UncheckedQueue: @unchecked Sendable {
    let queue: BlockQueueClient
    var failure: String?
    var done = false
    init(_ queue: BlockQueueClient) { self.queue = queue }
}
