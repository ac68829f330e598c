import BlockDevice
import Foundation
import GuestMemory
import MemxTesting
import RemoteMem
import Testing
import VhostUser
import Virtio

/// `MemxBlockDevice`'s request handler on chains built in fake guest memory, over a real
/// embedded pool: every request type, validation, read-only mode, and the status it writes.
@Suite("BlockDevice")
final class BlockDeviceTests {
    let memory: FakeGuestMemory
    var driver: SplitQueueDriver
    let table: RingMemory
    let store: SharedMemoryPageStore
    let volume = "test-blockdev-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
    static let capacity: UInt64 = 1 << 20

    init() throws {
        memory = try FakeGuestMemory(regions: [(base: 0, size: 0xa0000), (base: 0xc0000, size: 0x400000)])
        driver = memory.makeDriver(size: 64, eventIndex: false)
        table = try memory.map.ring(at: driver.layout.descriptorTable, length: driver.layout.descriptorTableBytes)
        store = try SharedMemoryPageStore(volume: volume, capacityBytes: Self.capacity)
    }

    deinit { try? SharedMemoryPageStore.remove(volume: volume) }

    func device(readOnly: Bool = false, serial: String = "memx-serial-01") -> MemxBlockDevice {
        MemxBlockDevice(configuration: BlockDeviceConfiguration(capacityBytes: Self.capacity, queueCount: 1,
                                                                readOnly: readOnly, serial: serial), store: store)
    }

    static func header(_ type: UInt32, sector: UInt64) -> [UInt8] { BlockRequestBytes.header(type: type, sector: sector) }

    static func range(sector: UInt64, count: UInt32, flags: UInt32) -> [UInt8] {
        BlockRequestBytes.range(sector: sector, count: count, flags: flags)
    }

    struct Outcome {
        var status: UInt8
        var usedLength: UInt32
        var data: [UInt8]
    }

    /// Runs one request: header, optional readable payload, `inLength` writable data bytes,
    /// status. Returns the status byte (0xff if never written), used length, and the data.
    func run(_ device: MemxBlockDevice, type: UInt32, sector: UInt64, payload: [UInt8] = [],
             inLength: UInt32 = 0) throws -> Outcome {
        var segments = [ChainSegment(address: memory.place(Self.header(type, sector: sector)).rawValue, length: 16,
                                     isWritable: false)]
        if !payload.isEmpty {
            segments.append(ChainSegment(address: memory.place(payload).rawValue, length: UInt32(payload.count),
                                         isWritable: false))
        }
        let dataAddress = memory.allocate(UInt64(max(inLength, 1)), alignment: 512)
        memory.fill(dataAddress, count: Int(max(inLength, 1)), with: 0xee)
        if inLength > 0 {
            segments.append(ChainSegment(address: dataAddress.rawValue, length: inLength, isWritable: true))
        }
        let status = memory.allocate(1)
        memory.fill(status, count: 1, with: 0xff)
        segments.append(ChainSegment(address: status.rawValue, length: 1, isWritable: true))
        guard let head = driver.addChain(segments) else { throw BackendProcessError("ring full") }
        var chain = DescriptorChain()
        try chain.load(head: head, table: table, queueSize: driver.layout.size, memory: memory.map)
        let used = device.makeRequestHandler(queueIndex: 0).handle(chain, writer: memory.writer)
        return Outcome(status: memory.read(status, count: 1)[0], usedLength: used,
                       data: memory.read(dataAddress, count: Int(inLength)))
    }

    static let read: UInt32 = 0, write: UInt32 = 1, flush: UInt32 = 4, getID: UInt32 = 8
    static let discard: UInt32 = 11, writeZeroes: UInt32 = 13

    @Test("write then read returns the bytes; used length is data + 1 for reads, 1 for writes")
    func writeRead() throws {
        let device = device()
        let data = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let w = try run(device, type: Self.write, sector: 24, payload: data)
        #expect(w.status == 0 && w.usedLength == 1)
        let r = try run(device, type: Self.read, sector: 24, inLength: 8192)
        #expect(r.status == 0 && r.usedLength == 8193)
        #expect(r.data == data)
    }

    @Test("unwritten sectors read as zeros")
    func unwrittenReadsZero() throws {
        let r = try run(device(), type: Self.read, sector: 100, inLength: 4096)
        #expect(r.status == 0)
        #expect(r.data == [UInt8](repeating: 0, count: 4096))
    }

    @Test("out of range, past the end, or not whole sectors: IOERR", arguments: [
        (UInt64(2048), UInt32(512)),      // first sector past the end (1 MiB = 2048 sectors)
        (UInt64(2047), UInt32(1024)),     // runs past the end
        (UInt64.max / 512, UInt32(512)),  // offset overflows
        (UInt64(0), UInt32(100)),         // not a multiple of 512
    ])
    func badRanges(sector: UInt64, length: UInt32) throws {
        let r = try run(device(), type: Self.read, sector: sector, inLength: length)
        #expect(r.status == 1 && r.usedLength == 1)
        let w = try run(device(), type: Self.write, sector: sector, payload: [UInt8](repeating: 1, count: Int(length)))
        #expect(w.status == 1)
    }

    @Test("unknown request types get UNSUPP; the legacy barrier bit is ignored")
    func unknownType() throws {
        #expect(try run(device(), type: 99, sector: 0).status == 2)
        #expect(try run(device(), type: 10, sector: 0, inLength: 48).status == 2)  // GET_LIFETIME
        #expect(try run(device(), type: 0x8000_0000 | Self.flush, sector: 0).status == 0)
    }

    @Test("GET_ID writes the 20-byte serial, zero padded, or truncated to the buffer")
    func getID() throws {
        let r = try run(device(serial: "vol-7"), type: Self.getID, sector: 0, inLength: 20)
        #expect(r.status == 0 && r.usedLength == 21)
        #expect(r.data == Array("vol-7".utf8) + [UInt8](repeating: 0, count: 15))
        let short = try run(device(serial: "abcdefghij"), type: Self.getID, sector: 0, inLength: 4)
        #expect(short.status == 0 && short.data == Array("abcd".utf8))
    }

    @Test("read-only: writes, discards and write-zeroes fail with IOERR; reads and flush work")
    func readOnly() throws {
        let device = device(readOnly: true)
        #expect(device.features.contains(.blockReadOnly))
        #expect(!device.features.contains(.blockDiscard))
        #expect(try run(device, type: Self.write, sector: 0, payload: [UInt8](repeating: 9, count: 512)).status == 1)
        #expect(try run(device, type: Self.discard, sector: 0, payload: Self.range(sector: 0, count: 8, flags: 0)).status == 1)
        #expect(try run(device, type: Self.read, sector: 0, inLength: 512).status == 0)
        #expect(try run(device, type: Self.flush, sector: 0).status == 0)
    }

    @Test("DISCARD and WRITE_ZEROES zero the range and give whole pages back")
    func discardAndWriteZeroes() throws {
        let device = device()
        let ones = [UInt8](repeating: 1, count: 64 << 10)
        #expect(try run(device, type: Self.write, sector: 0, payload: ones).status == 0)
        let before = store.residentBytes
        #expect(try run(device, type: Self.discard, sector: 0, payload: Self.range(sector: 0, count: 64, flags: 0)).status == 0)
        #expect(try run(device, type: Self.writeZeroes, sector: 64, payload: Self.range(sector: 64, count: 64, flags: 1)).status == 0)
        #expect(store.residentBytes <= before - (64 << 10))
        let r = try run(device, type: Self.read, sector: 0, inLength: 64 << 10)
        #expect(r.data == [UInt8](repeating: 0, count: 64 << 10))
    }

    @Test("DISCARD with UNMAP or unknown flags is UNSUPP; bad range lists are IOERR")
    func discardValidation() throws {
        let device = device()
        #expect(try run(device, type: Self.discard, sector: 0, payload: Self.range(sector: 0, count: 8, flags: 1)).status == 2)
        #expect(try run(device, type: Self.writeZeroes, sector: 0, payload: Self.range(sector: 0, count: 8, flags: 2)).status == 2)
        #expect(try run(device, type: Self.discard, sector: 0, payload: [1, 2, 3]).status == 1)  // not 16 bytes
        #expect(try run(device, type: Self.discard, sector: 0,
                        payload: Self.range(sector: 0, count: 8, flags: 0) + Self.range(sector: 8, count: 8, flags: 0)).status == 1)
        #expect(try run(device, type: Self.discard, sector: 0, payload: Self.range(sector: 2040, count: 16, flags: 0)).status == 1)
    }

    @Test("a chain with a header but no data for a write of nothing succeeds; no writable byte returns length 0")
    func degenerateChains() throws {
        let device = device()
        #expect(try run(device, type: Self.write, sector: 0).status == 0)
        // Only a readable header: there is no status byte to write.
        let segment = ChainSegment(address: memory.place(Self.header(0, sector: 0)).rawValue, length: 16, isWritable: false)
        guard let head = driver.addChain([segment]) else { throw BackendProcessError("ring full") }
        var chain = DescriptorChain()
        try chain.load(head: head, table: table, queueSize: driver.layout.size, memory: memory.map)
        #expect(device.makeRequestHandler(queueIndex: 0).handle(chain, writer: memory.writer) == 0)
    }

    @Test("config space: capacity, limits and queues; SET_CONFIG toggles only wce")
    func configSpace() throws {
        let device = device()
        let config = device.configSpace()
        #expect(config.count == BlockConfigSpace.sizeBytes)
        let capacity = config[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        #expect(capacity == Self.capacity / 512)
        #expect(config[32] == 1)
        #expect(device.writeConfig(offset: 32, bytes: [0]) == nil)
        #expect(device.configSpace()[32] == 0)
        #expect(device.writeConfig(offset: 0, bytes: [1]) != nil)
        #expect(device.writeConfig(offset: 32, bytes: [7]) != nil)
    }
}

/// The embedded pool: sparse, persistent, exclusive, and strict about geometry.
@Suite("SharedMemoryPageStore")
struct SharedMemoryPageStoreTests {
    func volume() -> String { "test-pool-\(getpid())-\(UInt32.random(in: 0...UInt32.max))" }

    @Test("unwritten pages read as zeros without costing memory; data survives reopening")
    func sparseAndPersistent() throws {
        let name = volume()
        defer { try? SharedMemoryPageStore.remove(volume: name) }
        do {
            let store = try SharedMemoryPageStore(volume: name, capacityBytes: 64 << 20)
            var buffer = [UInt8](repeating: 0xaa, count: 1 << 20)
            try buffer.withUnsafeMutableBytes { try store.read(at: 8 << 20, into: $0) }
            #expect(buffer.allSatisfy { $0 == 0 })
            #expect(store.residentBytes <= 4096, "reading holes allocated \(store.residentBytes) bytes")
            let data = [UInt8](repeating: 0x5a, count: 8192)
            try data.withUnsafeBytes { try store.write(at: 4096, from: $0) }
            #expect(store.residentBytes >= 8192)
        }
        let reopened = try SharedMemoryPageStore(volume: name, capacityBytes: 64 << 20)
        var buffer = [UInt8](repeating: 0, count: 8192)
        try buffer.withUnsafeMutableBytes { try reopened.read(at: 4096, into: $0) }
        #expect(buffer.allSatisfy { $0 == 0x5a })
    }

    @Test("a second opener is refused while the first holds the volume")
    func exclusive() throws {
        let name = volume()
        defer { try? SharedMemoryPageStore.remove(volume: name) }
        let first = try SharedMemoryPageStore(volume: name, capacityBytes: 1 << 20)
        #expect(throws: PageStoreError.self) { try SharedMemoryPageStore(volume: name, capacityBytes: 1 << 20) }
        _ = first
    }

    @Test("opening with another size is a clear error, never a resize")
    func geometryMismatch() throws {
        let name = volume()
        defer { try? SharedMemoryPageStore.remove(volume: name) }
        do { _ = try SharedMemoryPageStore(volume: name, capacityBytes: 1 << 20) }
        do {
            _ = try SharedMemoryPageStore(volume: name, capacityBytes: 2 << 20)
            Issue.record("a different size was accepted")
        } catch {
            guard case .geometryMismatch(let why) = error else { throw error }
            #expect(why.contains("1048576"))
        }
    }

    @Test("ranges outside the volume are refused")
    func outOfRange() throws {
        let name = volume()
        defer { try? SharedMemoryPageStore.remove(volume: name) }
        let store = try SharedMemoryPageStore(volume: name, capacityBytes: 1 << 20)
        var buffer = [UInt8](repeating: 0, count: 4096)
        #expect(throws: PageStoreError.outOfRange(offset: 1 << 20, length: 4096)) {
            try buffer.withUnsafeMutableBytes { try store.read(at: 1 << 20, into: $0) }
        }
        #expect(throws: PageStoreError.self) { try store.discard(at: UInt64.max - 10, length: 100) }
    }

    @Test("a file that is not a pool is refused")
    func notAPool() throws {
        let name = volume()
        let path = SharedMemoryPageStore.path(directory: "/dev/shm", volume: name)
        defer { unlink(path) }
        #expect(FileManager.default.createFile(atPath: path, contents: Data(repeating: 7, count: 8192)))
        #expect(throws: PageStoreError.self) { try SharedMemoryPageStore(volume: name, capacityBytes: 4096) }
    }
}
