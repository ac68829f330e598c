import GuestMemory
import LinuxSystem
import MemxTesting
import Testing

/// `GuestMemoryMap`, `GuestMemoryRegion`, `DirtyLog` and `GuestMemoryWriter`: ranges across
/// adjacent regions and holes, region tables, frontend address translation, dirty logging.
@Suite("GuestMemory")
struct GuestMemoryTests {
    /// [0, 0xa0000) hole [0xc0000, 0x1c0000)[0x1c0000, 0x2c0000) — the last two adjacent.
    static let regions: [FakeGuestMemory.RegionSpec] = [
        (base: 0, size: 0xa0000), (base: 0xc0000, size: 0x100000), (base: 0x1c0000, size: 0x100000),
    ]

    let memory: FakeGuestMemory
    init() throws { memory = try FakeGuestMemory(regions: Self.regions) }

    static func anonymous(_ base: UInt64, _ size: UInt64) throws(GuestMemoryError) -> GuestMemoryRegion {
        try GuestMemoryRegion(anonymousAt: GuestAddress(base), size: size)
    }

    static func isInvalidRegion(_ error: GuestMemoryError?) -> Bool {
        if case .invalidRegion = error { return true }
        return false
    }

    // MARK: - contains

    static let containsCases: [(address: UInt64, length: UInt64, expected: Bool)] = [
        (UInt64(0), UInt64(0xa0000), true),
        (0, 0xa0001, false),              // one byte into the hole
        (0x9ffff, 1, true),
        (0xa0000, 1, false),              // hole
        (0xa0000, 0, false),              // an empty range in the hole is not RAM either
        (0xbffff, 2, false),              // ends in the hole... and starts there
        (0x9fff0, 0x30000, false),        // spans the hole
        (0xc0000, 0x200000, true),        // two adjacent regions, whole
        (0x1bfff0, 0x20, true),           // across the adjacent boundary
        (0x1c0000, 0, true),
        (0x2bffff, 1, true),
        (0x2c0000, 0, false),             // exclusive end
        (0x2bffff, 2, false),
        (UInt64.max, 1, false),
        (UInt64.max - 1, UInt64.max, false),  // overflow
        (0x1000, UInt64.max, false),
    ]

    @Test("contains: inside, across adjacent regions, across the hole, at the edges", arguments: containsCases)
    func contains(_ address: UInt64, _ length: UInt64, _ expected: Bool) {
        #expect(memory.map.contains(GuestAddress(address), length: length) == expected)
        #expect(memory.specsCover(address, length: length) == expected, "oracle agrees")
    }

    // MARK: - withHostBuffers, read, write

    @Test("withHostBuffers gives one host view per region crossed, in order")
    func hostBuffersAcrossRegions() throws {
        let start = GuestAddress(0x1c0000 - 10)
        var counts: [Int] = []
        var next: UInt8 = 0
        try memory.map.withHostBuffers(start, length: 30) { (piece: UnsafeMutableRawBufferPointer) throws(Never) in
            counts.append(piece.count)
            for i in piece.indices {
                piece[i] = next
                next += 1
            }
        }
        #expect(counts == [10, 20])
        #expect(memory.read(start, count: 30) == Array(0..<30))
        #expect(memory.read(GuestAddress(0x1c0000), count: 1) == [10])
    }

    struct BodyFailure: Error, Equatable {}

    @Test("withHostBuffers refuses a range with a hole before calling the body")
    func hostBuffersOutOfRange() {
        var calls = 0
        do {
            try memory.map.withHostBuffers(GuestAddress(0x9fff0), length: 0x30000) { (_: UnsafeMutableRawBufferPointer) throws(BodyFailure) in
                calls += 1
            }
            Issue.record("expected an error")
        } catch {
            guard case .memory(.outOfRange(let address, let length)) = error else {
                Issue.record("expected outOfRange, got \(error)")
                return
            }
            #expect(address == GuestAddress(0x9fff0) && length == 0x30000)
        }
        #expect(calls == 0)
    }

    @Test("withHostBuffers passes the body's error through and stops")
    func hostBuffersBodyError() {
        var calls = 0
        do {
            try memory.map.withHostBuffers(GuestAddress(0x1c0000 - 4), length: 8) { (_: UnsafeMutableRawBufferPointer) throws(BodyFailure) in
                calls += 1
                throw BodyFailure()
            }
            Issue.record("expected an error")
        } catch {
            guard case .body(let failure) = error else {
                Issue.record("expected the body's error, got \(error)")
                return
            }
            #expect(failure == BodyFailure())
        }
        #expect(calls == 1)
    }

    @Test("read and write cross adjacent regions; load is little-endian; failures are outOfRange")
    func readWrite() throws {
        let pattern: [UInt8] = (0..<100).map { UInt8($0 * 3 & 0xff) }
        let start = GuestAddress(0x1c0000 - 50)
        try pattern.withUnsafeBytes { raw throws in try memory.map.write(start, from: raw) }
        #expect(memory.read(start, count: 100) == pattern)
        memory.write([1, 2, 3, 4, 5, 6, 7, 8], at: GuestAddress(0x1bfffc))
        #expect(try memory.map.load(UInt32.self, at: GuestAddress(0x1bfffe)) == 0x0605_0403)
        #expect(try memory.map.load(UInt64.self, at: GuestAddress(0x1bfffc)) == 0x0807_0605_0403_0201)

        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x9fff8), length: 16)) {
            try buffer.withUnsafeMutableBytes { raw throws in try memory.map.read(GuestAddress(0x9fff8), into: raw) }
        }
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x2bfff8), length: 16)) {
            try buffer.withUnsafeBytes { raw throws in try memory.map.write(GuestAddress(0x2bfff8), from: raw) }
        }
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x9fffe), length: 4)) {
            _ = try memory.map.load(UInt32.self, at: GuestAddress(0x9fffe))
        }
    }

    @Test("ring views must sit in one region")
    func ringView() throws {
        let view = try memory.map.ring(at: GuestAddress(0x1bf000), length: 0x1000)
        #expect(view.length == 0x1000)
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0x1bf000), length: 0x1001)) {
            _ = try memory.map.ring(at: GuestAddress(0x1bf000), length: 0x1001)
        }
        #expect(throws: GuestMemoryError.outOfRange(GuestAddress(0xa0000), length: 16)) {
            _ = try memory.map.ring(at: GuestAddress(0xa0000), length: 16)
        }
        // A view writes through to guest memory.
        view.storeU32(8, 0xdead_beef)
        #expect(memory.load(UInt32.self, at: GuestAddress(0x1bf008)) == 0xdead_beef)
    }

    // MARK: - Region tables

    @Test("overlapping regions are refused; adjacent ones are accepted and sorted")
    func overlap() throws {
        #expect(throws: GuestMemoryError.self) {
            _ = try GuestMemoryMap(regions: [Self.anonymous(0, 0x2000), Self.anonymous(0x1000, 0x2000)])
        }
        #expect(throws: GuestMemoryError.self) {
            _ = try GuestMemoryMap(regions: [Self.anonymous(0x1000, 0x1000), Self.anonymous(0, 0x4000)])
        }
        #expect(throws: GuestMemoryError.self) {
            _ = try GuestMemoryMap(regions: [Self.anonymous(0x4000, 0x1000), Self.anonymous(0x4000, 0x1000)])
        }
        let map = try GuestMemoryMap(regions: [Self.anonymous(0x1000, 0x1000), Self.anonymous(0, 0x1000)])
        #expect(map.regions.map(\.layout.guestAddress.rawValue) == [0, 0x1000])
        #expect(map.guestEnd == 0x2000)
        #expect(map.contains(GuestAddress(0), length: 0x2000))
        do {
            _ = try map.adding(Self.anonymous(0x1800, 0x1000))
            Issue.record("adding an overlapping region succeeded")
        } catch {
            #expect(Self.isInvalidRegion(error))
        }
        let grown = try map.adding(Self.anonymous(0x10000, 0x1000))
        #expect(grown.regions.count == 3)
        #expect(grown.guestEnd == 0x11000)
        #expect(map.regions.count == 2, "adding makes a new snapshot")
        #expect(GuestMemoryMap.empty.isEmpty && GuestMemoryMap.empty.guestEnd == 0)
    }

    @Test("removing by layout ignores mmap_offset; the old snapshot stays readable")
    func removing() throws {
        let layout = memory.map.regions[1].layout
        memory.write([42], at: GuestAddress(0xc0000))
        var probe = layout
        probe.mmapOffset = 0x1234
        let smaller = try #require(memory.map.removing(probe))
        #expect(smaller.regions.count == 2)
        #expect(!smaller.contains(GuestAddress(0xc0000), length: 1))
        #expect(smaller.contains(GuestAddress(0x1c0000), length: 1))
        #expect(memory.map.contains(GuestAddress(0xc0000), length: 1))
        #expect(memory.read(GuestAddress(0xc0000), count: 1) == [42])

        var wrongSize = layout
        wrongSize.size += 0x1000
        #expect(memory.map.removing(wrongSize) == nil)
        var wrongFrontend = layout
        wrongFrontend.frontendAddress = FrontendAddress(layout.frontendAddress.rawValue + 0x1000)
        #expect(memory.map.removing(wrongFrontend) == nil)
        var wrongGuest = layout
        wrongGuest.guestAddress = GuestAddress(0xd0000)
        #expect(memory.map.removing(wrongGuest) == nil)
    }

    // MARK: - File-backed regions and frontend translation

    static let frontendA: UInt64 = 0x7f00_0000_0000
    static let frontendB: UInt64 = 0x7f00_0001_0000  // frontend-adjacent to A; guest-distant

    /// Region A: gpa 0 size 64 KiB; region B: gpa 1 MiB size 128 KiB at mmap_offset 0x3000 of
    /// its memfd, whose first 0x3000 bytes are 0xee and whose region bytes count up.
    static func fileBackedMap() throws -> GuestMemoryMap {
        let fdA = try MemFD.create(name: "memx-test-a", size: 0x10000)
        let fdB = try MemFD.create(name: "memx-test-b", size: 0x23000)
        let view = try MemoryMapping(fd: fdB.rawValue, length: 0x23000)
        for i in 0..<0x3000 { view.bytes[i] = 0xee }
        for i in 0..<0x100 { view.bytes[0x3000 + i] = UInt8(i) }
        let a = try GuestMemoryRegion(layout: MemoryRegionLayout(guestAddress: GuestAddress(0), size: 0x10000,
                                                                 frontendAddress: FrontendAddress(frontendA), mmapOffset: 0),
                                      fd: fdA)
        let b = try GuestMemoryRegion(layout: MemoryRegionLayout(guestAddress: GuestAddress(0x100000), size: 0x20000,
                                                                 frontendAddress: FrontendAddress(frontendB), mmapOffset: 0x3000),
                                      fd: fdB)
        return try GuestMemoryMap(regions: [a, b])
    }

    @Test("a file-backed region starts mmap_offset bytes into its file")
    func mmapOffset() throws {
        let map = try Self.fileBackedMap()
        var bytes = [UInt8](repeating: 0, count: 4)
        try bytes.withUnsafeMutableBytes { raw throws in try map.read(GuestAddress(0x100000), into: raw) }
        #expect(bytes == [0, 1, 2, 3])
        #expect(!map.contains(GuestAddress(0x100000 + 0x20000 - 1), length: 2))
    }

    static let translationCases: [(address: UInt64, length: UInt64, expected: UInt64?)] = [
        (frontendA, UInt64(0x100), UInt64?(0)),
        (frontendA + 0x1230, 0x100, 0x1230),
        (frontendA + 0xff00, 0x100, 0xff00),              // ends exactly at the region end
        (frontendA + 0xff00, 0x101, nil),                 // runs into B: frontend-contiguous, still refused
        (frontendB, 0x20000, 0x100000),
        (frontendB + 0x10, 16, 0x100010),
        (frontendB + 0x20000, 0, nil),                    // one past the end
        (frontendA - 1, 2, nil),
        (0x1000, 16, nil),                                // a guest address is not a frontend address
        (frontendA, UInt64.max, nil),
        (UInt64.max, 1, nil),
    ]

    @Test("frontend addresses translate through user_addr; a ring must fit in one region", arguments: translationCases)
    func frontendTranslation(_ address: UInt64, _ length: UInt64, _ expected: UInt64?) throws {
        let map = try Self.fileBackedMap()
        do {
            let guest = try map.guestAddress(of: FrontendAddress(address), length: length)
            #expect(guest.rawValue == expected)
        } catch {
            #expect(expected == nil, "\(error)")
            #expect(error == .unmappedFrontendAddress(FrontendAddress(address), length: length))
        }
    }

    @Test("empty and wrapping regions are refused")
    func invalidRegions() throws {
        let fd = try MemFD.create(name: "memx-test-bad", size: 0x1000)
        for layout in [
            MemoryRegionLayout(guestAddress: GuestAddress(0), size: 0, frontendAddress: FrontendAddress(0x1000), mmapOffset: 0),
            MemoryRegionLayout(guestAddress: GuestAddress(.max - 0x800), size: 0x1000,
                               frontendAddress: FrontendAddress(0x1000), mmapOffset: 0),
            MemoryRegionLayout(guestAddress: GuestAddress(0), size: 0x1000,
                               frontendAddress: FrontendAddress(.max - 0x800), mmapOffset: 0),
            MemoryRegionLayout(guestAddress: GuestAddress(0), size: 0x1000,
                               frontendAddress: FrontendAddress(0x1000), mmapOffset: .max - 0x800),
            // Sizes beyond Int.max: a hostile ADD_MEM_REG must be refused, not trap.
            MemoryRegionLayout(guestAddress: GuestAddress(0), size: .max, frontendAddress: FrontendAddress(0), mmapOffset: 0),
            MemoryRegionLayout(guestAddress: GuestAddress(0), size: 1 << 63, frontendAddress: FrontendAddress(0), mmapOffset: 0),
        ] {
            do {
                _ = try GuestMemoryRegion(layout: layout, fd: fd)
                Issue.record("accepted \(layout)")
            } catch {
                #expect(Self.isInvalidRegion(error), "\(layout): \(error)")
            }
        }
    }

    // MARK: - Dirty log

    /// A 64-byte log (512 pages = 2 MiB of guest RAM) at offset 4096 of a memfd, and a second
    /// mapping of the whole memfd to inspect every bit independently of `DirtyLog`.
    final class LogFixture {
        static let logBytes = 64
        static let logOffset = 4096
        let log: DirtyLog
        let view: MemoryMapping

        init() throws {
            let fd = try MemFD.create(name: "memx-test-log", size: 3 * 4096)
            log = try DirtyLog(fd: fd, size: UInt64(Self.logBytes), offset: UInt64(Self.logOffset))
            view = try MemoryMapping(fd: fd.rawValue, length: 3 * 4096)
        }

        /// The set pages, read bit by bit from the memfd (the log area only).
        var dirtyPages: [UInt64] {
            var pages: [UInt64] = []
            for byte in 0..<Self.logBytes {
                let value = view.bytes[Self.logOffset + byte]
                for bit in 0..<8 where value & (1 << bit) != 0 { pages.append(UInt64(byte * 8 + bit)) }
            }
            return pages
        }

        /// True if any byte of the memfd outside the log area is non-zero.
        var touchedOutsideLog: Bool {
            (0..<view.length).contains { ($0 < Self.logOffset || $0 >= Self.logOffset + Self.logBytes) && view.bytes[$0] != 0 }
        }
    }

    static let dirtyCases: [(address: UInt64, length: UInt64, pages: [UInt64])] = [
        (UInt64(0x1000), UInt64(1), [UInt64(1)]),
        (0x1fff, 1, [1]),
        (0x0fff, 2, [0, 1]),                          // crosses a page boundary by one byte
        (0x5000, 0x2001, [5, 6, 7]),
        (0x5000, 0x2000, [5, 6]),
        (0x8000, 0, []),
        (0x3f000, 0x2000, [63, 64]),                  // crosses a byte of the bitmap
        (0x1ff000, 0x1000, [511]),                    // the last page the log covers
        (0x1ff800, 0x2000, [511]),                    // runs beyond the log end: the rest is ignored
        (0x200000, 0x1000, []),                       // entirely beyond
        (1 << 40, 0x10000, []),
        (UInt64.max - 10, 5, []),
    ]

    @Test("mark sets exactly the bits of the pages touched", arguments: dirtyCases)
    func dirtyBits(_ address: UInt64, _ length: UInt64, _ pages: [UInt64]) throws {
        let fixture = try LogFixture()
        fixture.log.mark(GuestAddress(address), length: length)
        #expect(fixture.dirtyPages == pages)
        #expect(!fixture.touchedOutsideLog)
        for page in pages { #expect(fixture.log.isDirty(GuestAddress(page * 4096 + 7))) }
        #expect(fixture.log.sizeBytes == LogFixture.logBytes)
    }

    @Test("marks accumulate, and a huge range stops at the log end")
    func dirtyAccumulateAndClamp() throws {
        let fixture = try LogFixture()
        fixture.log.mark(GuestAddress(0x3000), length: 1)
        fixture.log.mark(GuestAddress(0x3000), length: 1)
        fixture.log.mark(GuestAddress(0x9000), length: 0x1000)
        #expect(fixture.dirtyPages == [3, 9])
        fixture.log.mark(GuestAddress(0x100000), length: UInt64(1) << 40)
        #expect(fixture.dirtyPages == [3, 9] + Array(256..<512))
        #expect(!fixture.touchedOutsideLog)
        #expect(!fixture.log.isDirty(GuestAddress(0x200000)))
    }

    @Test("GuestMemoryWriter logs every write it makes, including a failed fill")
    func writerLogs() throws {
        let fixture = try LogFixture()
        let writer = GuestMemoryWriter(memory: memory.map, log: fixture.log)
        try [UInt8](repeating: 1, count: 0x1002).withUnsafeBytes { raw throws in try writer.write(GuestAddress(0x2fff), from: raw) }
        try writer.writeByte(GuestAddress(0xc0000 + 0x5), 0)
        writer.logRingWrite(GuestAddress(0x1bfffc), length: 8)
        struct Stop: Error {}
        #expect(throws: GuestMemoryAccessError<Stop>.self) {
            try writer.fill(GuestAddress(0x50000), length: 0x2000) { (_: UnsafeMutableRawBufferPointer) throws(Stop) in throw Stop() }
        }
        #expect(fixture.dirtyPages == [2, 3, 4, 0x50, 0x51, 0xc0, 0x1bf, 0x1c0])
        #expect(memory.read(GuestAddress(0x2fff), count: 2) == [1, 1])
        // A write that fails the range check logs nothing.
        #expect(throws: GuestMemoryError.self) {
            try [UInt8](repeating: 1, count: 16).withUnsafeBytes { raw throws in try writer.write(GuestAddress(0xa0000), from: raw) }
        }
        #expect(!fixture.log.isDirty(GuestAddress(0xa0000)))
    }

    @Test("DirtyLog refuses an empty or absurd log")
    func dirtyLogLimits() throws {
        let fd = try MemFD.create(name: "memx-test-log2", size: 4096)
        #expect(throws: Errno.self) { _ = try DirtyLog(fd: fd, size: 0, offset: 0) }
        #expect(throws: Errno.self) { _ = try DirtyLog(fd: fd, size: (1 << 40) + 1, offset: 0) }
    }
}
