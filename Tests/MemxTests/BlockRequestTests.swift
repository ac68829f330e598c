import GuestMemory
import MemxTesting
import Testing
import Virtio

/// `BlockRequest.parse` on chains built in fake memory: every request layout of
/// vhost-user.md §2.3, ANY_LAYOUT splits, and malformed chains.
@Suite("BlockRequest")
struct BlockRequestTests {
    let memory: FakeGuestMemory
    let driver: SplitQueueDriver
    let table: RingMemory

    init() throws {
        memory = try FakeGuestMemory(regions: [(base: 0, size: 0xa0000), (base: 0xc0000, size: 0x100000)])
        driver = memory.makeDriver(size: 16, eventIndex: false)
        table = try memory.map.ring(at: driver.layout.descriptorTable, length: driver.layout.descriptorTableBytes)
    }

    static func header(type: UInt32, sector: UInt64, ioprio: UInt32 = 0) -> [UInt8] {
        BlockRequestBytes.header(type: type, sector: sector, ioprio: ioprio)
    }

    /// A buffer in fake memory: readable ones are filled with `bytes`.
    struct Buffer {
        var address: GuestAddress
        var length: UInt32
        var isWritable: Bool
    }

    func readable(_ bytes: [UInt8]) -> Buffer {
        Buffer(address: memory.place(bytes), length: UInt32(bytes.count), isWritable: false)
    }

    func writable(_ length: UInt32) -> Buffer {
        Buffer(address: memory.allocate(UInt64(max(length, 1))), length: length, isWritable: true)
    }

    /// Writes `buffers` as a direct chain at descriptors 0, 1, ... and loads it.
    func chain(_ buffers: [Buffer]) throws -> DescriptorChain {
        for (i, buffer) in buffers.enumerated() {
            let last = i == buffers.count - 1
            var flags: UInt16 = buffer.isWritable ? Descriptor.flagWrite : 0
            if !last { flags |= Descriptor.flagNext }
            driver.writeDescriptor(UInt16(i), Descriptor(address: buffer.address.rawValue, length: buffer.length,
                                                         flags: flags, next: UInt16(i + 1)))
        }
        var chain = DescriptorChain()
        try chain.load(head: 0, table: table, queueSize: 16, memory: memory.map)
        return chain
    }

    func parse(_ buffers: [Buffer]) throws -> BlockRequest {
        try BlockRequest.parse(chain(buffers), memory: memory.map)
    }

    func parseError(_ buffers: [Buffer]) throws -> BlockRequestError? {
        let loaded = try chain(buffers)
        do {
            _ = try BlockRequest.parse(loaded, memory: memory.map)
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Layouts

    @Test("read: data is the writable bytes before the status")
    func read() throws {
        let data = writable(4096), status = writable(1)
        let request = try parse([readable(Self.header(type: 0, sector: 0x1_0000_0042)), data, status])
        #expect(request.type == .read)
        #expect(request.rawType == 0)
        #expect(request.sector == 0x1_0000_0042)
        #expect(request.dataOffset == 0)
        #expect(request.dataLength == 4096)
        #expect(request.statusAddress == status.address)
        #expect(request.usedLength(status: .ok) == 4097)
        #expect(request.usedLength(status: .ioError) == 1)
        #expect(request.usedLength(status: .unsupported) == 1)
    }

    @Test("write: data is the readable bytes after the 16-byte header")
    func write() throws {
        let status = writable(1)
        let request = try parse([readable(Self.header(type: 1, sector: 8)), readable([UInt8](repeating: 7, count: 1024)),
                                 readable([UInt8](repeating: 8, count: 512)), status])
        #expect(request.type == .write)
        #expect(request.sector == 8)
        #expect(request.dataOffset == 16)
        #expect(request.dataLength == 1536)
        #expect(request.statusAddress == status.address)
        #expect(request.usedLength(status: .ok) == 1)
    }

    @Test("flush: no data")
    func flush() throws {
        let status = writable(1)
        let request = try parse([readable(Self.header(type: 4, sector: 0)), status])
        #expect(request.type == .flush)
        #expect(request.dataLength == 0)
        #expect(request.statusAddress == status.address)
        #expect(request.usedLength(status: .ok) == 1)
    }

    @Test("GET_ID: a 20-byte writable buffer before the status")
    func getID() throws {
        let request = try parse([readable(Self.header(type: 8, sector: 0)), writable(20), writable(1)])
        #expect(request.type == .getID)
        #expect(request.dataOffset == 0)
        #expect(request.dataLength == 20)
        #expect(request.usedLength(status: .ok) == 21)
        #expect(request.usedLength(status: .unsupported) == 1)
    }

    @Test("discard and write-zeroes: ranges follow the header, even across descriptors",
          arguments: [(UInt32(11), BlockRequestType.discard), (13, .writeZeroes)])
    func discardRanges(_ code: UInt32, _ type: BlockRequestType) throws {
        var payload: [UInt8] = []
        for (sector, count, flags) in [(UInt64(0x10_0000_0001), UInt32(8), UInt32(0)), (4096, 65536, 1)] {
            withUnsafeBytes(of: sector.littleEndian) { payload.append(contentsOf: $0) }
            withUnsafeBytes(of: count.littleEndian) { payload.append(contentsOf: $0) }
            withUnsafeBytes(of: flags.littleEndian) { payload.append(contentsOf: $0) }
        }
        // Header and the first 4 bytes of range 0 in one descriptor; the rest split at byte 23.
        let bytes = Self.header(type: code, sector: 0) + payload
        let loaded = try chain([readable(Array(bytes[0..<20])), readable(Array(bytes[20..<39])),
                                readable(Array(bytes[39...])), writable(1)])
        let request = try BlockRequest.parse(loaded, memory: memory.map)
        #expect(request.type == type)
        #expect(request.dataOffset == 16)
        #expect(request.dataLength == 32)
        #expect(request.usedLength(status: .ok) == 1)
        #expect(try DiscardRange.read(0, of: request, chain: loaded, memory: memory.map)
                == DiscardRange(sector: 0x10_0000_0001, sectorCount: 8, flags: 0))
        #expect(try DiscardRange.read(1, of: request, chain: loaded, memory: memory.map)
                == DiscardRange(sector: 4096, sectorCount: 65536, flags: DiscardRange.flagUnmap))
    }

    @Test("ANY_LAYOUT: header split over two descriptors; header with data; status inside the data descriptor")
    func anyLayout() throws {
        let header = Self.header(type: 0, sector: 77)
        let split = try parse([readable(Array(header[0..<5])), readable(Array(header[5...])), writable(512), writable(1)])
        #expect(split.type == .read && split.sector == 77 && split.dataLength == 512)

        let combined = try parse([readable(Self.header(type: 1, sector: 9) + [UInt8](repeating: 1, count: 512)), writable(1)])
        #expect(combined.type == .write && combined.sector == 9)
        #expect(combined.dataOffset == 16 && combined.dataLength == 512)

        let dataAndStatus = writable(513)
        let shared = try parse([readable(header), dataAndStatus])
        #expect(shared.dataLength == 512)
        #expect(shared.statusAddress == GuestAddress(dataAndStatus.address.rawValue + 512))
        #expect(shared.usedLength(status: .ok) == 513)
    }

    @Test("the legacy barrier bit is masked off")
    func legacyBarrier() throws {
        let request = try parse([readable(Self.header(type: 0x8000_0001, sector: 3)), readable([0, 0]), writable(1)])
        #expect(request.rawType == 1)
        #expect(request.type == .write)
        #expect(request.dataLength == 2)
    }

    @Test("an unknown type parses with type nil and no data", arguments: [UInt32(2), 10, 14, 99, 0x7fff_ffff])
    func unknownType(_ code: UInt32) throws {
        let status = writable(1)
        let request = try parse([readable(Self.header(type: code, sector: 0)), writable(64), status])
        #expect(request.type == nil)
        #expect(request.rawType == code)
        #expect(request.dataLength == 0)
        #expect(request.statusAddress == status.address)
        #expect(request.usedLength(status: .unsupported) == 1)
    }

    // MARK: - Malformed

    @Test("a header shorter than 16 bytes is malformed, with the status address", arguments: [0, 1, 8, 15])
    func shortHeader(_ length: Int) throws {
        let status = writable(1)
        var buffers = [Buffer]()
        if length > 0 { buffers.append(readable(Array(Self.header(type: 1, sector: 0)[0..<length]))) }
        buffers += [writable(512), status]
        let error = try parseError(buffers)
        guard case .malformed(let statusAddress, _) = error else {
            Issue.record("expected malformed, got \(String(describing: error))")
            return
        }
        #expect(statusAddress == status.address)
    }

    @Test("no writable byte is noStatusByte")
    func noStatus() throws {
        #expect(try parseError([readable(Self.header(type: 1, sector: 0))]) == .noStatusByte)
        #expect(try parseError([readable(Self.header(type: 0, sector: 0)), writable(0)]) == .noStatusByte)
    }

    @Test("zero-length writable descriptors at the end do not hide the status byte")
    func trailingEmptyWritable() throws {
        let data = writable(512)
        let request = try parse([readable(Self.header(type: 0, sector: 0)), data, writable(0), writable(0)])
        #expect(request.statusAddress == GuestAddress(data.address.rawValue + 511))
        #expect(request.dataLength == 511)
    }
}
