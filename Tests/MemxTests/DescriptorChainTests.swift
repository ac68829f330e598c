import GuestMemory
import MemxTesting
import Testing
import Virtio

/// `DescriptorChain.load` against fake guest memory: well-formed chains (direct, indirect,
/// ANY_LAYOUT) and every way a hostile driver can break the rules (vhost-user.md §2.4).
@Suite("DescriptorChain")
struct DescriptorChainTests {
    /// Low RAM, a hole, then two adjacent regions: [0, 0xa0000) [0xc0000, 0x1c0000) [0x1c0000, 0x2c0000).
    static let regions: [FakeGuestMemory.RegionSpec] = [
        (base: 0, size: 0xa0000), (base: 0xc0000, size: 0x100000), (base: 0x1c0000, size: 0x100000),
    ]
    static let holeStart: UInt64 = 0xa0000
    static let adjacentBoundary: UInt64 = 0x1c0000
    static let memoryEnd: UInt64 = 0x2c0000

    let memory: FakeGuestMemory
    let driver: SplitQueueDriver
    let table: RingMemory
    let size: UInt16

    init(size: UInt16 = 16) throws {
        memory = try FakeGuestMemory(regions: Self.regions)
        driver = memory.makeDriver(size: size, eventIndex: false, inRegion: 0)
        table = try memory.map.ring(at: driver.layout.descriptorTable, length: driver.layout.descriptorTableBytes)
        self.size = size
    }

    func put(_ index: UInt16, _ address: UInt64, _ length: UInt32, _ flags: UInt16 = 0, next: UInt16 = 0) {
        driver.writeDescriptor(index, Descriptor(address: address, length: length, flags: flags, next: next))
    }

    func load(head: UInt16 = 0, into chain: inout DescriptorChain) throws(VirtqueueError) {
        try chain.load(head: head, table: table, queueSize: size, memory: memory.map)
    }

    func load(head: UInt16 = 0) throws(VirtqueueError) -> DescriptorChain {
        var chain = DescriptorChain()
        try load(head: head, into: &chain)
        return chain
    }

    func loadError(head: UInt16 = 0) -> VirtqueueError? {
        do {
            _ = try load(head: head)
            return nil
        } catch {
            return error
        }
    }

    static let next = Descriptor.flagNext
    static let write = Descriptor.flagWrite
    static let indirect = Descriptor.flagIndirect

    // MARK: - Well-formed chains

    @Test("a direct three-descriptor chain loads in order with its byte counts")
    func directChain() throws {
        let header = memory.allocate(16)
        let data = memory.allocate(4096, inRegion: 1)
        let status = memory.allocate(1, inRegion: 2)
        put(3, header.rawValue, 16, Self.next, next: 7)
        put(7, data.rawValue, 4096, Self.next | Self.write, next: 1)
        put(1, status.rawValue, 1, Self.write)
        let chain = try load(head: 3)
        #expect(chain.head == 3)
        #expect(chain.segments == [
            ChainSegment(address: header.rawValue, length: 16, isWritable: false),
            ChainSegment(address: data.rawValue, length: 4096, isWritable: true),
            ChainSegment(address: status.rawValue, length: 1, isWritable: true),
        ])
        #expect(chain.readableBytes == 16)
        #expect(chain.writableBytes == 4097)
        #expect(chain.lastWritableByte == status)
    }

    @Test("a driver-built chain and an indirect chain load the same segments")
    func indirectChain() throws {
        var driver = self.driver
        let buffers = [
            ChainSegment(address: memory.allocate(16).rawValue, length: 16, isWritable: false),
            ChainSegment(address: memory.allocate(512, inRegion: 1).rawValue, length: 512, isWritable: false),
            ChainSegment(address: memory.allocate(512, inRegion: 2).rawValue, length: 512, isWritable: true),
            ChainSegment(address: memory.allocate(1).rawValue, length: 1, isWritable: true),
        ]
        let directHead = driver.addChain(buffers)
        let direct = try #require(directHead)
        let tableAddress = memory.allocate(UInt64(buffers.count * 16), inRegion: 1)
        let indirectHead = try driver.addIndirectChain(buffers, table: tableAddress)
        let indirect = try #require(indirectHead)
        #expect(try load(head: direct).segments == buffers)
        let chain = try load(head: indirect)
        #expect(chain.head == indirect)
        #expect(chain.segments == buffers)
        #expect(chain.readableBytes == 528)
        #expect(chain.writableBytes == 513)
    }

    @Test("an indirect table with out-of-order next links is followed by index")
    func indirectOrder() throws {
        let a = memory.allocate(16), b = memory.allocate(8), c = memory.allocate(4)
        let tableAddress = memory.allocate(64)
        memory.writeDescriptorTable([
            Descriptor(address: a.rawValue, length: 16, flags: Self.next, next: 2),
            Descriptor(address: 0xdead_0000_0000, length: 99, flags: 0, next: 0),  // never reached
            Descriptor(address: b.rawValue, length: 8, flags: Self.next | Self.write, next: 3),
            Descriptor(address: c.rawValue, length: 4, flags: Self.write, next: 0),
        ], at: tableAddress)
        put(5, tableAddress.rawValue, 64, Self.indirect)
        let chain = try load(head: 5)
        #expect(chain.segments.map(\.address) == [a.rawValue, b.rawValue, c.rawValue])
        #expect(chain.writableBytes == 12)
    }

    @Test("the write flag of the indirect descriptor itself is ignored")
    func indirectDescriptorWriteFlag() throws {
        let a = memory.allocate(16)
        let tableAddress = memory.allocate(16)
        memory.writeDescriptorTable([Descriptor(address: a.rawValue, length: 16, flags: 0, next: 0)], at: tableAddress)
        put(0, tableAddress.rawValue, 16, Self.indirect | Self.write)
        let chain = try load()
        #expect(chain.segments == [ChainSegment(address: a.rawValue, length: 16, isWritable: false)])
    }

    @Test("ANY_LAYOUT: header and data in one descriptor; status shares the data descriptor")
    func anyLayout() throws {
        let out = memory.allocate(16 + 4096)
        let status = memory.allocate(1)
        put(0, out.rawValue, 16 + 4096, Self.next, next: 1)
        put(1, status.rawValue, 1, Self.write)
        let write = try load()
        #expect(write.readableBytes == 4112)
        #expect(write.lastWritableByte == status)

        let header = memory.allocate(16)
        let dataAndStatus = memory.allocate(4097)
        put(2, header.rawValue, 16, Self.next, next: 3)
        put(3, dataAndStatus.rawValue, 4097, Self.write)
        let read = try load(head: 2)
        #expect(read.segments.count == 2)
        #expect(read.writableBytes == 4097)
        #expect(read.lastWritableByte == GuestAddress(dataAndStatus.rawValue + 4096))
    }

    @Test("zero-length descriptors are kept, and skipped when finding the status byte")
    func zeroLength() throws {
        let header = memory.allocate(16), data = memory.allocate(512)
        put(0, header.rawValue, 16, Self.next, next: 1)
        put(1, data.rawValue, 512, Self.next | Self.write, next: 2)
        put(2, data.rawValue, 0, Self.write)
        let chain = try load()
        #expect(chain.segments.count == 3)
        #expect(chain.lastWritableByte == GuestAddress(data.rawValue + 511))
    }

    @Test("a direct prefix followed by an indirect table is one chain")
    func directThenIndirect() throws {
        let header = memory.allocate(16), data = memory.allocate(512), status = memory.allocate(1)
        let tableAddress = memory.allocate(32)
        memory.writeDescriptorTable([
            Descriptor(address: data.rawValue, length: 512, flags: Self.next | Self.write, next: 1),
            Descriptor(address: status.rawValue, length: 1, flags: Self.write, next: 0),
        ], at: tableAddress)
        put(0, header.rawValue, 16, Self.next, next: 1)
        put(1, tableAddress.rawValue, 32, Self.indirect)
        let chain = try load()
        #expect(chain.segments.map(\.address) == [header.rawValue, data.rawValue, status.rawValue])
    }

    @Test("a reused chain forgets the previous request, including after a failure")
    func reuse() throws {
        let a = memory.allocate(64), b = memory.allocate(32)
        put(0, a.rawValue, 64, Self.next | Self.write, next: 1)
        put(1, a.rawValue, 64, Self.write)
        put(2, b.rawValue, 32, 0)
        put(3, b.rawValue, 32, Self.write | Self.next, next: 4)
        put(4, b.rawValue, 32, 0)  // readable after writable
        var chain = DescriptorChain()
        try load(head: 0, into: &chain)
        #expect(chain.writableBytes == 128)
        #expect(throws: VirtqueueError.readableAfterWritable) { try load(head: 3, into: &chain) }
        try load(head: 2, into: &chain)
        #expect(chain.head == 2)
        #expect(chain.segments == [ChainSegment(address: b.rawValue, length: 32, isWritable: false)])
        #expect(chain.readableBytes == 32)
        #expect(chain.writableBytes == 0)
        #expect(chain.lastWritableByte == nil)
    }

    @Test("a chain of exactly queueSize descriptors is accepted")
    func fullLengthChain() throws {
        let buffer = memory.allocate(64)
        for i in 0..<size {
            let last = i == size - 1
            put(i, buffer.rawValue, 4, last ? 0 : Self.next, next: i + 1)
        }
        #expect(try load().segments.count == Int(size))
    }

    // MARK: - Hostile drivers

    @Test("a loop is chainTooLong", arguments: [UInt16(0), 1, 15])
    func loop(_ back: UInt16) {
        let buffer = memory.allocate(64)
        for i in 0..<size {
            put(i, buffer.rawValue, 4, Self.next, next: i == size - 1 ? back : i + 1)
        }
        #expect(loadError() == .chainTooLong)
        // A self-loop.
        put(0, buffer.rawValue, 4, Self.next, next: 0)
        #expect(loadError() == .chainTooLong)
    }

    @Test("a head or next past the table is descriptorIndexOutOfRange")
    func indexOutOfRange() {
        let buffer = memory.allocate(16)
        put(0, buffer.rawValue, 16, Self.write)
        #expect(loadError(head: size) == .descriptorIndexOutOfRange(size))
        #expect(loadError(head: .max) == .descriptorIndexOutOfRange(.max))
        put(0, buffer.rawValue, 16, Self.next, next: size)
        #expect(loadError() == .descriptorIndexOutOfRange(size))
        put(0, buffer.rawValue, 16, Self.next, next: 0xffff)
        #expect(loadError() == .descriptorIndexOutOfRange(0xffff))
    }

    @Test("an indirect descriptor inside an indirect table is nestedIndirect")
    func nestedIndirect() {
        let inner = memory.allocate(16), outer = memory.allocate(32), buffer = memory.allocate(16)
        memory.writeDescriptorTable([Descriptor(address: buffer.rawValue, length: 16, flags: 0, next: 0)], at: inner)
        memory.writeDescriptorTable([
            Descriptor(address: buffer.rawValue, length: 16, flags: Self.next, next: 1),
            Descriptor(address: inner.rawValue, length: 16, flags: Self.indirect, next: 0),
        ], at: outer)
        put(0, outer.rawValue, 32, Self.indirect)
        #expect(loadError() == .nestedIndirect)
    }

    @Test("an indirect descriptor with NEXT is invalidIndirectTable")
    func indirectWithNext() {
        let tableAddress = memory.allocate(16), buffer = memory.allocate(16)
        memory.writeDescriptorTable([Descriptor(address: buffer.rawValue, length: 16, flags: 0, next: 0)], at: tableAddress)
        put(0, tableAddress.rawValue, 16, Self.indirect | Self.next, next: 1)
        put(1, buffer.rawValue, 16, 0)
        #expect(loadError() == .invalidIndirectTable(length: 16))
    }

    @Test("an indirect table of bad length is invalidIndirectTable",
          arguments: [UInt32(0), 1, 15, 17, 24, UInt32(VirtioLimits.indirectEntriesMax + 1) * 16, .max])
    func indirectLength(_ length: UInt32) {
        let tableAddress = memory.allocate(0x8000, inRegion: 1)
        put(0, tableAddress.rawValue, length, Self.indirect)
        #expect(loadError() == .invalidIndirectTable(length: length))
    }

    @Test("an indirect table of the maximum size is accepted")
    func indirectMaximum() throws {
        let entries = VirtioLimits.indirectEntriesMax
        let tableAddress = memory.allocate(UInt64(entries) * 16, inRegion: 1)
        let buffer = memory.allocate(16)
        memory.writeDescriptorTable((0..<entries).map {
            Descriptor(address: buffer.rawValue, length: 1, flags: $0 == entries - 1 ? 0 : Self.next, next: UInt16($0 + 1))
        }, at: tableAddress)
        put(0, tableAddress.rawValue, UInt32(entries * 16), Self.indirect)
        #expect(try load().segments.count == entries)
    }

    @Test("indirect tables: outside memory, across the hole, looping, next past the end")
    func indirectHostile() {
        put(0, Self.holeStart, 32, Self.indirect)
        #expect(loadError() == .memory(.outOfRange(GuestAddress(Self.holeStart), length: 32)))
        put(0, Self.holeStart - 16, 32, Self.indirect)
        #expect(loadError() == .memory(.outOfRange(GuestAddress(Self.holeStart - 16), length: 32)))

        let buffer = memory.allocate(16), tableAddress = memory.allocate(48)
        memory.writeDescriptorTable([
            Descriptor(address: buffer.rawValue, length: 1, flags: Self.next, next: 1),
            Descriptor(address: buffer.rawValue, length: 1, flags: Self.next, next: 2),
            Descriptor(address: buffer.rawValue, length: 1, flags: Self.next, next: 0),
        ], at: tableAddress)
        put(0, tableAddress.rawValue, 48, Self.indirect)
        #expect(loadError() == .chainTooLong)

        memory.writeDescriptorTable([
            Descriptor(address: buffer.rawValue, length: 1, flags: Self.next, next: 3),
        ], at: tableAddress)
        #expect(loadError() == .descriptorIndexOutOfRange(3))
    }

    @Test("a buffer outside guest memory is out of range", arguments: [
        (Self.holeStart, UInt32(1)),                 // in the hole
        (Self.holeStart - 1, UInt32(2)),             // ends in the hole
        (Self.memoryEnd, UInt32(1)),                 // just past the end
        (Self.memoryEnd - 4, UInt32(5)),             // runs past the end
        (UInt64(1) << 40, UInt32(512)),              // far away
        (UInt64.max - 0xf, UInt32(0x20)),            // address + len overflows UInt64
        (UInt64.max, UInt32.max),
    ])
    func outOfMemory(_ address: UInt64, _ length: UInt32) {
        let header = memory.allocate(16)
        put(0, header.rawValue, 16, Self.next, next: 1)
        put(1, address, length, Self.write)
        #expect(loadError() == .memory(.outOfRange(GuestAddress(address), length: UInt64(length))))
    }

    @Test("a buffer spanning two adjacent regions is accepted and reads across them")
    func adjacentRegions() throws {
        let start = Self.adjacentBoundary - 8
        memory.write(Array(0..<16), at: GuestAddress(start))
        put(0, start, 16, 0)
        let chain = try load()
        #expect(chain.readableBytes == 16)
        var bytes = [UInt8](repeating: 0xff, count: 16)
        try bytes.withUnsafeMutableBytes { raw throws in try chain.copyReadable(offset: 0, into: raw, memory: memory.map) }
        #expect(bytes == Array(0..<16))
    }

    @Test("a readable descriptor after a writable one is refused, also across an indirect table")
    func readableAfterWritable() {
        let buffer = memory.allocate(16)
        put(0, buffer.rawValue, 16, Self.write | Self.next, next: 1)
        put(1, buffer.rawValue, 16, 0)
        #expect(loadError() == .readableAfterWritable)

        let tableAddress = memory.allocate(16)
        memory.writeDescriptorTable([Descriptor(address: buffer.rawValue, length: 16, flags: 0, next: 0)], at: tableAddress)
        put(1, tableAddress.rawValue, 16, Self.indirect)
        #expect(loadError() == .readableAfterWritable)
    }

    @Test("a readable descriptor after an empty writable one is still out of order")
    func readableAfterEmptyWritable() {
        let buffer = memory.allocate(16)
        put(0, buffer.rawValue, 16, Self.next, next: 1)
        put(1, buffer.rawValue, 0, Self.write | Self.next, next: 2)
        put(2, buffer.rawValue, 16, 0)
        #expect(loadError() == .readableAfterWritable)
    }

    @Test("a chain describing more than 4 GiB is chainTooLarge; 4 GiB − 1 is accepted")
    func chainTooLarge() throws {
        // 256 descriptors of 16 MiB, all over one 16 MiB region: 2^32 bytes.
        let memory = try FakeGuestMemory(regions: [(base: 0, size: 0x10000), (base: 0x100_0000, size: 0x100_0000)])
        let driver = memory.makeDriver(size: 256, eventIndex: false, inRegion: 0)
        let table = try memory.map.ring(at: driver.layout.descriptorTable, length: driver.layout.descriptorTableBytes)
        for i in 0..<UInt16(256) {
            driver.writeDescriptor(i, Descriptor(address: 0x100_0000, length: 0x100_0000,
                                                 flags: i == 255 ? Self.write : Self.next | Self.write, next: i + 1))
        }
        var chain = DescriptorChain()
        #expect(throws: VirtqueueError.chainTooLarge) {
            try chain.load(head: 0, table: table, queueSize: 256, memory: memory.map)
        }
        driver.writeDescriptor(255, Descriptor(address: 0x100_0000, length: 0xff_ffff, flags: Self.write, next: 0))
        try chain.load(head: 0, table: table, queueSize: 256, memory: memory.map)
        #expect(chain.writableBytes == UInt64(UInt32.max))
        // Readable and writable bytes count together.
        driver.writeDescriptor(0, Descriptor(address: 0x100_0000, length: 0x100_0000, flags: Self.next, next: 1))
        driver.writeDescriptor(255, Descriptor(address: 0x100_0000, length: 0x100_0000, flags: Self.write, next: 0))
        #expect(throws: VirtqueueError.chainTooLarge) {
            try chain.load(head: 0, table: table, queueSize: 256, memory: memory.map)
        }
    }

    // MARK: - forEachRange

    struct Piece: Equatable { var address: UInt64; var count: UInt64 }

    func pieces(_ chain: DescriptorChain, writable: Bool, offset: UInt64, length: UInt64) -> [Piece] {
        var result: [Piece] = []
        chain.forEachRange(writable: writable, offset: offset, length: length) { (address, count) throws(Never) in
            result.append(Piece(address: address.rawValue, count: count))
        }
        return result
    }

    @Test("forEachRange splits a range at segment boundaries and skips the other direction")
    func forEachRange() throws {
        let r0 = memory.allocate(3), w0 = memory.allocate(10)
        let r1 = memory.allocate(5), r2 = memory.allocate(7), w1 = memory.allocate(4)
        put(0, r0.rawValue, 3, Self.next, next: 1)
        put(1, r1.rawValue, 5, Self.next, next: 2)
        put(2, r2.rawValue, 7, Self.next, next: 3)
        put(3, w0.rawValue, 10, Self.write | Self.next, next: 4)
        put(4, w1.rawValue, 4, Self.write)
        let chain = try load()
        #expect(pieces(chain, writable: false, offset: 2, length: 9) == [
            Piece(address: r0.rawValue + 2, count: 1), Piece(address: r1.rawValue, count: 5),
            Piece(address: r2.rawValue, count: 3),
        ])
        #expect(pieces(chain, writable: false, offset: 3, length: 5) == [Piece(address: r1.rawValue, count: 5)],
                "a range exactly one segment long")
        #expect(pieces(chain, writable: false, offset: 8, length: 7) == [Piece(address: r2.rawValue, count: 7)])
        #expect(pieces(chain, writable: false, offset: 0, length: 15).reduce(0) { $0 + $1.count } == 15)
        #expect(pieces(chain, writable: false, offset: 15, length: 0).isEmpty)
        #expect(pieces(chain, writable: true, offset: 9, length: 5) == [
            Piece(address: w0.rawValue + 9, count: 1), Piece(address: w1.rawValue, count: 4),
        ])
        #expect(pieces(chain, writable: true, offset: 13, length: 1) == [Piece(address: w1.rawValue + 3, count: 1)])
    }

    @Test("copyReadable gathers bytes across segments")
    func copyReadable() throws {
        let a = memory.place([1, 2, 3]), b = memory.place([4, 5, 6, 7, 8]), c = memory.place([9, 10])
        put(0, a.rawValue, 3, Self.next, next: 1)
        put(1, b.rawValue, 5, Self.next, next: 2)
        put(2, c.rawValue, 2, 0)
        let chain = try load()
        var bytes = [UInt8](repeating: 0, count: 6)
        try bytes.withUnsafeMutableBytes { raw throws in try chain.copyReadable(offset: 2, into: raw, memory: memory.map) }
        #expect(bytes == [3, 4, 5, 6, 7, 8])
    }
}
