import Foundation
import GuestMemory
import LinuxSystem
import MemxTesting
import Testing
import VhostUser
import Virtio

/// Live migration between two real memx-vhost processes on the same memory servers, each
/// driven by the Swift frontend exactly as QEMU 7.2 drives source and destination
/// (research/vhost-user.md §5.1): the source hands the volume off at the last GET_VRING_BASE
/// while dirty logging is on, the standby destination takes the lease when its rings start.
@Suite("Live migration over the socket", .serialized)
struct MigrationTests {
    static let blocks = 64  // of 64 KiB: 4 MiB, the cache's size

    /// A source backend and a standby destination on the same two servers and volume.
    final class Pair {
        let pool: ServerPool
        let source: Backend
        let destination: Backend
        let cacheDirectory: String

        init(_ name: String) throws {
            pool = try ServerPool("mig-\(name)", count: 2)
            let servers = pool.addresses.flatMap { ["--server", $0.description] }
            source = try Backend("mig-\(name)-src", extra: servers + ["--cache", "4M"])
            // The destination: same volume and size, its own cache directory (one host).
            cacheDirectory = try BackendProcess.temporaryDirectory("mig-\(name)-dst-cache")
            destination = try Backend("mig-\(name)-dst", volume: source.volume,
                                      extra: servers + ["--cache", "4M", "--standby", "--pool-directory", cacheDirectory])
        }

        deinit { try? FileManager.default.removeItem(atPath: cacheDirectory) }
    }

    func write(_ queue: BlockQueueClient, version: Int) throws {
        for block in 0..<Self.blocks {
            #expect(try queue.write(sector: UInt64(block) * 128, data: pattern(block + version * 1000, 65536)).isOK)
        }
    }

    func verify(_ queue: BlockQueueClient, version: Int, _ context: String) throws {
        for block in 0..<Self.blocks {
            let (completion, data) = try queue.read(sector: UInt64(block) * 128, byteCount: 65536)
            #expect(completion.isOK && data == pattern(block + version * 1000, 65536), "\(context): block \(block)")
        }
    }

    /// Turns QEMU's migration logging on: SET_LOG_BASE, then SET_FEATURES with LOG_ALL.
    func startLogging(_ client: FrontendClient) throws -> DirtyLog {
        let logBytes = UInt64((64 << 20) / 4096 / 8)
        let fd = try MemFD.create(name: "dirty-log", size: Int(logBytes))
        try client.send(.setLogBase(LogArea(mmapSize: logBytes, mmapOffset: 0)), fds: [fd.rawValue])
        _ = try client.receiveReply(expecting: .setLogBase)
        let features = try #require(client.ackedFeatures)
        try client.sendAcknowledged(.setFeatures(features.union(.logAll).rawValue))
        return try DirtyLog(fd: fd, size: logBytes, offset: 0)
    }

    func waitForLog(_ backend: Backend, _ text: String) -> Bool {
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline {
            if backend.log.contains(text) { return true }
            usleep(20_000)
        }
        return false
    }

    @Test("migrate: write-back data and writes during logging reach the destination; the old source is fenced on restart")
    func migrateAndFenceTheSource() throws {
        let pair = try Pair("move")
        #expect(pair.destination.log.contains("standby: the lease is taken when QEMU starts the rings"), "\(pair.destination.log)")
        let source = try pair.source.connect()
        let destination = try pair.destination.connect()  // QEMU connects to the destination at realize
        #expect(try destination.readConfig(size: 8).capacitySectors == (64 << 20) / 512)
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 65536
        let queue = try source.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        try write(queue, version: 1)  // write-back: dirty in the source's cache
        let log = try startLogging(source)
        #expect(waitForLog(pair.source, "migration started"), "\(pair.source.log)")
        // During migration: writes go through, and data the device writes is logged.
        for block in 0..<(Self.blocks / 2) {
            #expect(try queue.write(sector: UInt64(block) * 128, data: pattern(block + 2000, 65536)).isOK)
        }
        let (completion, _) = try queue.read(sector: 0, byteCount: 4096)
        #expect(log.isDirty(queue.area.dataAddress(slot: completion.slot)))
        // Switchover: QEMU stops the rings; the last GET_VRING_BASE answer waits for the handoff.
        let bases = try source.stop()
        #expect(pair.source.log.contains("written back and its lease released"), "\(pair.source.log)")

        let moved = try destination.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        #expect(waitForLog(pair.destination, "active here under lease epoch"), "\(pair.destination.log)")
        // The source's cached pages were listed at the switchover and fetched here at once.
        #expect(waitForLog(pair.destination, "warmed the cache with"), "\(pair.destination.log)")
        #expect(!pair.destination.log.contains("warmed the cache with 0 "), "\(pair.destination.log)")
        for block in 0..<Self.blocks {
            let version = block < Self.blocks / 2 ? 2 : 1
            let (completion, data) = try moved.read(sector: UInt64(block) * 128, byteCount: 65536)
            #expect(completion.isOK && data == pattern(block + version * 1000, 65536), "destination: block \(block)")
        }
        #expect(try moved.write(sector: 0, data: pattern(3000, 65536)).isOK)
        #expect(try moved.perform(.flush).isOK)

        // The source VM is resumed anyway (`cont` after migration): its backend must not serve.
        try source.start(resuming: [queue], vringBases: bases.map { UInt16($0) })
        #expect(waitForLog(pair.source, "opened it since"), "\(pair.source.log)")
        let stale = try queue.read(sector: 0, byteCount: 4096)
        #expect(stale.0.status == .ioError, "a fenced source must not answer reads")
        #expect(try queue.write(sector: 0, data: pattern(9999, 4096)).status == .ioError)
        // The destination still has its own data.
        let (after, data) = try moved.read(sector: 0, byteCount: 65536)
        #expect(after.isOK && data == pattern(3000, 65536))
    }

    @Test("a pause keeps the lease; a cancelled migration and a failed switchover go on serving on the source")
    func pauseCancelAndFailedSwitchover() throws {
        let pair = try Pair("stay")
        let source = try pair.source.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 65536
        var queue = try source.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        try write(queue, version: 1)
        // Pause (virsh suspend): the rings stop without logging, then start again.
        var bases = try source.stop()
        #expect(!pair.source.log.contains("lease released"))
        try source.start(resuming: [queue], vringBases: bases.map { UInt16($0) })
        try verify(queue, version: 1, "after a pause")

        // A migration that is cancelled before the switchover: logging on, then off.
        _ = try startLogging(source)
        try write(queue, version: 2)
        try source.sendAcknowledged(.setFeatures(try #require(source.ackedFeatures).rawValue))
        #expect(waitForLog(pair.source, "migration ended without a switchover"), "\(pair.source.log)")
        try verify(queue, version: 2, "after a cancel")

        // A switchover that fails (the destination never starts): QEMU restarts the source's
        // rings; nobody took the volume, so the source takes its lease back.
        _ = try startLogging(source)
        bases = try source.stop()
        #expect(pair.source.log.contains("lease released"))
        try source.start(resuming: [queue], vringBases: bases.map { UInt16($0) })
        #expect(waitForLog(pair.source, "taken back"), "\(pair.source.log)")
        try verify(queue, version: 2, "after a failed switchover")
        try write(queue, version: 3)
        #expect(try queue.perform(.flush).isOK)
        try source.stop()
        queue = try source.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        try verify(queue, version: 3, "after a restart")
    }

    @Test("--standby: a volume that does not exist or has another size is a clear error at start")
    func standbyChecksTheVolume() throws {
        let pool = try ServerPool("mig-standby", count: 1)
        let servers = pool.addresses.flatMap { ["--server", $0.description] }
        let directory = try BackendProcess.temporaryDirectory("mig-standby")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let missing = "standby-missing-\(getpid())"
        #expect(throws: (any Error).self) {
            _ = try BackendProcess(socketPath: directory + "/a.sock",
                                   arguments: ["--size", "64M", "--volume", missing, "--standby"] + servers,
                                   logPath: directory + "/a.log")
        }
        let log = (try? String(contentsOfFile: directory + "/a.log", encoding: .utf8)) ?? ""
        #expect(log.contains("does not exist on the memory servers"), "\(log)")
    }
}
