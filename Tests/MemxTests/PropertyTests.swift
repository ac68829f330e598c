import GuestMemory
import MemxTesting
import Testing
import VhostUser
import Virtio

/// Fuzz-style properties over the parsers that take guest and frontend input (style rule 13;
/// `vm-virtio/fuzz/fuzz_targets/blk.rs`): random descriptor tables through
/// `DescriptorChain.load` + `BlockRequest.parse`, and random bytes through `MessageCodec`.
///
/// Seeded from `MEMX_SEED` (default fixed); iterations from `MEMX_PROPERTY_ITERATIONS`
/// (default small enough for a few seconds). A failure names the seed and the iteration.
@Suite("Properties")
struct PropertyTests {
    static let iterations = TestEnvironment.propertyIterations(default: 3000)

    /// Low RAM, a hole, two adjacent regions, and a high region far away.
    static let regions: [FakeGuestMemory.RegionSpec] = [
        (base: 0, size: 0xa0000), (base: 0xc0000, size: 0x40000), (base: 0x100000, size: 0x40000),
        (base: 0x1_0000_0000, size: 0x10000),
    ]

    // MARK: - The generator itself

    @Test("the seeded generator is reproducible: SplitMix64 reference values, same seed same stream")
    func generatorIsReproducible() {
        var mixer = SplitMix64(state: 0)
        #expect([mixer.next(), mixer.next(), mixer.next()] == [0xe220_a839_7b1d_cdaf, 0x6e78_9e6a_a1b9_65f4, 0x06c4_5d18_8009_454f])
        var a = SeededRandom(seed: 42), b = SeededRandom(seed: 42), c = SeededRandom(seed: 43)
        let streamA = (0..<64).map { _ in a.next() }
        #expect(streamA == (0..<64).map { _ in b.next() })
        #expect(streamA != (0..<64).map { _ in c.next() })
        #expect(Set(streamA).count == 64)
        #expect(a.reproduceHint == "reproduce with MEMX_SEED=42")
        let bytes = a.bytes(13)
        #expect(bytes.count == 13 && Set(bytes).count > 1)
    }

    // MARK: - Random descriptors

    /// An address biased towards the interesting places: inside regions, at their edges, in
    /// holes, near the top of the address space.
    static func randomAddress(_ random: inout SeededRandom, memory: FakeGuestMemory) -> UInt64 {
        let spec = random.pick(memory.specs)
        switch UInt64.random(in: 0..<10, using: &random) {
        case 0...4: return spec.base + UInt64.random(in: 0..<spec.size, using: &random)
        case 5: return spec.base + spec.size - UInt64.random(in: 0...32, using: &random)   // at or just before an end
        case 6: return spec.base &- UInt64.random(in: 0...32, using: &random)               // just before a start
        case 7: return UInt64.max - UInt64.random(in: 0...0x1000, using: &random)
        case 8: return 0xa0000 + UInt64.random(in: 0..<0x20000, using: &random)            // the hole
        default: return random.next()
        }
    }

    static func randomLength(_ random: inout SeededRandom) -> UInt32 {
        switch UInt64.random(in: 0..<10, using: &random) {
        case 0: return 0
        case 1: return 1
        case 2...5: return UInt32.random(in: 1...4096, using: &random)
        case 6: return 16
        case 7: return UInt32.random(in: 0...0x80000, using: &random)
        case 8: return UInt32.max - UInt32.random(in: 0...16, using: &random)
        default: return UInt32(truncatingIfNeeded: random.next())
        }
    }

    static func randomFlags(_ random: inout SeededRandom, indirectChance: UInt64) -> UInt16 {
        var flags: UInt16 = 0
        if random.chance(7, in: 10) { flags |= Descriptor.flagNext }
        if random.chance(1, in: 2) { flags |= Descriptor.flagWrite }
        if random.chance(indirectChance, in: 100) { flags |= Descriptor.flagIndirect }
        if random.chance(1, in: 50) { flags |= UInt16(truncatingIfNeeded: random.next()) }  // junk bits
        return flags
    }

    static func randomNext(_ random: inout SeededRandom, size: Int) -> UInt16 {
        random.chance(1, in: 20) ? UInt16(truncatingIfNeeded: random.next()) : UInt16.random(in: 0..<UInt16(size), using: &random)
    }

    /// Writes a random indirect table in the first region and returns its address and entry count.
    static func randomIndirectTable(_ random: inout SeededRandom, memory: FakeGuestMemory,
                                    tableArea: GuestAddress) -> (GuestAddress, Int) {
        let entries = Int.random(in: 1...32, using: &random)
        var descriptors: [Descriptor] = []
        for _ in 0..<entries {
            descriptors.append(Descriptor(address: randomAddress(&random, memory: memory), length: randomLength(&random),
                                          flags: randomFlags(&random, indirectChance: 3),
                                          next: randomNext(&random, size: entries)))
        }
        // Mostly well-formed runs: make a prefix a proper chain so deep chains happen.
        if random.chance(1, in: 2) {
            for i in 0..<(entries - 1) {
                descriptors[i].next = UInt16(i + 1)
                descriptors[i].flags &= ~Descriptor.flagIndirect
            }
        }
        memory.writeDescriptorTable(descriptors, at: tableArea)
        return (tableArea, entries)
    }

    /// The rule a rejected chain broke, without its details.
    static func kind(_ error: VirtqueueError) -> String {
        switch error {
        case .availIndexTooFar: "avail"
        case .descriptorIndexOutOfRange: "index"
        case .chainTooLong: "loop"
        case .nestedIndirect: "nested"
        case .invalidIndirectTable: "indirect"
        case .readableAfterWritable: "order"
        case .chainTooLarge: "large"
        case .memory: "memory"
        case .invalidRingLayout: "layout"
        }
    }

    // MARK: - Chain oracle

    /// Checks what must hold for any chain `load` accepted, against the region specs rather than
    /// `GuestMemoryMap`. Returns a description of the first violation, or nil.
    static func violation(_ chain: DescriptorChain, memory: FakeGuestMemory) -> String? {
        guard chain.segments.count <= VirtioLimits.chainSegmentsMax else { return "\(chain.segments.count) segments" }
        var readable: UInt64 = 0
        var writable: UInt64 = 0
        var seenWritable = false
        for segment in chain.segments {
            if segment.length > 0, !memory.specsCover(segment.address, length: UInt64(segment.length)) {
                return "segment \(segment) is not guest RAM"
            }
            if segment.isWritable {
                seenWritable = true
                writable += UInt64(segment.length)
            } else {
                if seenWritable { return "readable segment after a writable one" }
                readable += UInt64(segment.length)
            }
        }
        guard readable == chain.readableBytes, writable == chain.writableBytes else {
            return "byte counts \(chain.readableBytes)/\(chain.writableBytes), segments say \(readable)/\(writable)"
        }
        guard readable + writable <= VirtioLimits.chainBytesMax else { return "chain of \(readable + writable) bytes" }
        return nil
    }

    /// Checks a parsed request against its chain.
    static func violation(_ request: BlockRequest, chain: DescriptorChain, memory: FakeGuestMemory) -> String? {
        guard memory.specsCover(request.statusAddress.rawValue, length: 1) else { return "status outside memory" }
        guard let lastWritable = chain.segments.last(where: { $0.isWritable && $0.length > 0 }),
              request.statusAddress.rawValue == lastWritable.address + UInt64(lastWritable.length) - 1
        else { return "status is not the last writable byte" }
        guard chain.readableBytes >= 16 else { return "parsed a header shorter than 16 bytes" }
        switch request.type {
        case .read, .getID:
            guard request.dataOffset == 0, request.dataLength + 1 == chain.writableBytes else { return "read data range" }
            guard request.usedLength(status: .ok) == UInt32(truncatingIfNeeded: chain.writableBytes) else {
                return "read used length"
            }
        case .write, .discard, .writeZeroes:
            guard request.dataOffset == 16, request.dataOffset + request.dataLength == chain.readableBytes else {
                return "write data range"
            }
        case .flush, nil:
            guard request.dataLength == 0 else { return "data on a request without data" }
        }
        guard request.rawType & 0x8000_0000 == 0 else { return "barrier bit kept" }
        return nil
    }

    @Test("random descriptor tables: load and parse never crash; accepted chains are guest RAM")
    func randomChains() throws {
        var random = SeededRandom(environmentOr: 0x5eed_0001)
        let hint = random.reproduceHint
        let memory = try FakeGuestMemory(regions: Self.regions)
        let queueSizes: [UInt16] = [1, 2, 4, 8, 16, 64, 256]
        let drivers = queueSizes.map { memory.makeDriver(size: $0, eventIndex: false, inRegion: 0) }
        let tables = try drivers.map { try memory.map.ring(at: $0.layout.descriptorTable, length: $0.layout.descriptorTableBytes) }
        let indirectArea = memory.allocate(32 * 16 * 4, inRegion: 0)
        // Buffers that hold a valid header somewhere, so parse sees real request types too.
        let headers = memory.allocate(16 * 16, inRegion: 0)
        for i in 0..<16 {
            let type: UInt32 = random.pick([0, 1, 4, 8, 11, 13, 0x8000_0001, 99])
            var header: [UInt8] = []
            withUnsafeBytes(of: type.littleEndian) { header.append(contentsOf: $0) }
            header += random.bytes(12)
            memory.write(header, at: GuestAddress(headers.rawValue + UInt64(i) * 16))
        }

        var chain = DescriptorChain()
        var accepted = 0
        var parsed = 0
        var errors: [String: Int] = [:]
        for iteration in 0..<Self.iterations {
            let which = Int.random(in: 0..<queueSizes.count, using: &random)
            let size = Int(queueSizes[which])
            let driver = drivers[which]
            var indirectTables: [(GuestAddress, Int)] = []
            for t in 0..<Int.random(in: 0...4, using: &random) {
                let area = GuestAddress(indirectArea.rawValue + UInt64(t) * 32 * 16)
                indirectTables.append(Self.randomIndirectTable(&random, memory: memory, tableArea: area))
            }
            for index in 0..<size {
                var descriptor = Descriptor(address: Self.randomAddress(&random, memory: memory),
                                            length: Self.randomLength(&random),
                                            flags: Self.randomFlags(&random, indirectChance: 10),
                                            next: Self.randomNext(&random, size: size))
                if random.chance(1, in: 4) {  // point at a header
                    descriptor.address = headers.rawValue + UInt64.random(in: 0..<16, using: &random) * 16
                    descriptor.length = random.pick([16, 16, 8, 32])
                }
                if descriptor.isIndirect, let table = indirectTables.randomElement(using: &random) {
                    descriptor.address = table.0.rawValue
                    descriptor.length = random.chance(9, in: 10) ? UInt32(table.1 * 16) : Self.randomLength(&random)
                }
                driver.writeDescriptor(UInt16(index), descriptor)
            }
            let head = random.chance(1, in: 20) ? UInt16(truncatingIfNeeded: random.next()) : UInt16.random(in: 0..<UInt16(size), using: &random)
            if head < size, random.chance(1, in: 3) {
                // A plausible request: a header first, then a short tail of buffers in order.
                let header = headers.rawValue + UInt64.random(in: 0..<16, using: &random) * 16
                driver.writeDescriptor(head, Descriptor(address: header, length: 16, flags: Descriptor.flagNext,
                                                        next: Self.randomNext(&random, size: size)))
                let tail = Int.random(in: 0...2, using: &random)
                var index = head
                for i in 0...tail where size > 1 {
                    let next = UInt16.random(in: 0..<UInt16(size), using: &random)
                    let last = i == tail
                    let length = random.pick([UInt32(1), 512, 4096, Self.randomLength(&random)])
                    let buffer = memory.specs[0].base + UInt64.random(in: 0x20000..<0x90000, using: &random)
                    driver.writeDescriptor(index, Descriptor(address: index == head ? header : buffer,
                                                             length: index == head ? 16 : length,
                                                             flags: (index == head ? 0 : Descriptor.flagWrite) | (last ? 0 : Descriptor.flagNext),
                                                             next: next))
                    index = next
                }
            }
            do {
                try chain.load(head: head, table: tables[which], queueSize: UInt16(size), memory: memory.map)
            } catch {
                errors[Self.kind(error), default: 0] += 1
                continue
            }
            accepted += 1
            if let problem = Self.violation(chain, memory: memory) {
                Issue.record("iteration \(iteration): \(problem); \(hint)")
                return
            }
            guard let request = try? BlockRequest.parse(chain, memory: memory.map) else { continue }
            parsed += 1
            if let problem = Self.violation(request, chain: chain, memory: memory) {
                Issue.record("iteration \(iteration): \(problem); \(hint)")
                return
            }
            // Walking the data range touches only guest RAM and adds up.
            var walked: UInt64 = 0
            let writable = request.type == .read || request.type == .getID
            chain.forEachRange(writable: writable, offset: request.dataOffset, length: request.dataLength) { (address, count) throws(Never) in
                if !memory.specsCover(address.rawValue, length: count) {
                    Issue.record("iteration \(iteration): data range \(address) +\(count) outside memory; \(hint)")
                }
                walked += count
            }
            #expect(walked == request.dataLength, "iteration \(iteration); \(hint)")
        }
        // The generator must exercise both outcomes, or the property says nothing.
        if Self.iterations >= 1000 {
            #expect(accepted > Self.iterations / 50, "only \(accepted) chains accepted; \(hint)")
            #expect(parsed > 0, "no chain parsed as a request; \(hint)")
            let expected: Set = ["index", "loop", "nested", "indirect", "order", "memory"]
            #expect(expected.isSubset(of: Set(errors.keys)), "error kinds seen: \(errors); \(hint)")
        }
    }

    @Test("random well-formed chains are always accepted with exactly their buffers")
    func randomValidChains() throws {
        var random = SeededRandom(environmentOr: 0x5eed_0002)
        let hint = random.reproduceHint
        let memory = try FakeGuestMemory(regions: Self.regions)
        var driver = memory.makeDriver(size: 128, eventIndex: false, inRegion: 0)
        var queue = try SplitQueue(layout: driver.layout, memory: memory.map, nextAvail: 0, eventIndex: false)
        let indirectArea = memory.allocate(64 * 16, inRegion: 0)
        var chain = DescriptorChain()
        for iteration in 0..<(Self.iterations / 4) {
            let count = Int.random(in: 1...(random.chance(1, in: 2) ? 64 : 8), using: &random)
            let firstWritable = Int.random(in: 0...count, using: &random)
            var buffers: [ChainSegment] = []
            for i in 0..<count {
                let spec = random.pick(memory.specs)
                let length = UInt32.random(in: 0...min(0x3000, UInt32(spec.size)), using: &random)
                let offset = UInt64.random(in: 0...(spec.size - UInt64(length)), using: &random)
                // Sometimes straddle the boundary between the two adjacent regions.
                let address = random.chance(1, in: 10) && length > 1 ? 0x100000 - UInt64(length / 2) : spec.base + offset
                buffers.append(ChainSegment(address: address, length: length, isWritable: i >= firstWritable))
            }
            let indirect = random.chance(1, in: 2)
            do {
                let head = indirect ? try driver.addIndirectChain(buffers, table: indirectArea) : driver.addChain(buffers)
                guard let head else {
                    Issue.record("iteration \(iteration): driver out of descriptors; \(hint)")
                    return
                }
                let popped = try queue.popAvailable()
                #expect(popped == head, "iteration \(iteration); \(hint)")
                try chain.load(head: head, table: queue.descriptorTable, queueSize: queue.layout.size, memory: memory.map)
            } catch {
                Issue.record("iteration \(iteration): valid chain refused: \(error); \(hint)")
                return
            }
            let head = chain.head
            #expect(chain.segments == buffers, "iteration \(iteration); \(hint)")
            queue.addUsed(head: head, length: 0, writer: memory.writer)
            _ = queue.publishUsed(writer: memory.writer)
            #expect(driver.popUsed()?.head == head, "iteration \(iteration); \(hint)")
        }
    }

    // MARK: - Codec

    static let knownSizes = [0, 8, 16, 24, 40, 8 + 32, 8 + 64, 8 + 8 * 32, 8 + 9 * 32, 12, 12 + 57, 12 + 256]

    @Test("random bytes through validate + decode never crash; accepted messages re-encode stably")
    func randomMessages() {
        var random = SeededRandom(environmentOr: 0x5eed_0003)
        let hint = random.reproduceHint
        var decoded = 0
        for iteration in 0..<(Self.iterations * 3) {
            let request: UInt32 = random.chance(9, in: 10) ? UInt32.random(in: 0...45, using: &random)
                                                           : UInt32(truncatingIfNeeded: random.next())
            let flags: UInt32 = random.chance(8, in: 10) ? random.pick([1, 9]) : UInt32(truncatingIfNeeded: random.next())
            let size: Int = random.chance(7, in: 10) ? random.pick(Self.knownSizes) : Int.random(in: 0...4200, using: &random)
            var payload = random.bytes(size)
            if size >= 8, random.chance(1, in: 2) {
                // Plausible SET_MEM_TABLE counts and GET_CONFIG sizes.
                payload[0] = UInt8.random(in: 0...10, using: &random)
                payload[1] = 0; payload[2] = 0; payload[3] = 0
                if size >= 12 {
                    payload[4] = UInt8(truncatingIfNeeded: size - 12)
                    payload[5] = UInt8(truncatingIfNeeded: (size - 12) >> 8)
                    payload[6] = 0; payload[7] = 0
                }
            }
            var bytes: [UInt8] = []
            MessageHeader(request: request, flags: flags, size: UInt32(size)).encode(into: &bytes)
            bytes += payload
            let header = bytes.withUnsafeBytes { MessageHeader.decode($0) }
            do {
                try MessageCodec.validate(header)
            } catch {
                continue
            }
            let result = payload.withUnsafeBytes { raw in
                Result { () throws(VhostUserError) in try MessageCodec.decode(header, payload: raw) }
            }
            guard case .success(let message) = result else { continue }
            decoded += 1
            // Encoding what was decoded and decoding again gives the same message.
            let again = MessageAssembler.decode(MessageCodec.encode(message), cuts: [])
            #expect(again.count == 1 && (try? again[0].get()) == message, "iteration \(iteration): \(message); \(hint)")
        }
        if Self.iterations >= 1000 {
            #expect(decoded > 100, "only \(decoded) random messages decoded; \(hint)")
        }
    }

    @Test("random streams drip-fed through the assembler never crash")
    func randomStreams() {
        var random = SeededRandom(environmentOr: 0x5eed_0004)
        for _ in 0..<(Self.iterations / 10) {
            var stream: [UInt8] = []
            for _ in 0..<Int.random(in: 1...4, using: &random) {
                let size = random.pick([0, 8, 40, 69])
                MessageHeader(request: UInt32.random(in: 0...45, using: &random), flags: 1, size: UInt32(size))
                    .encode(into: &stream)
                stream += random.bytes(size)
            }
            if random.chance(1, in: 3) { stream += random.bytes(Int.random(in: 1...20, using: &random)) }
            let cuts = (0..<5).map { _ in Int.random(in: 0...stream.count, using: &random) }.sorted()
            let oneShot = MessageAssembler.decode(stream, cuts: [])
            #expect(MessageAssembler.decode(stream, cuts: cuts) == oneShot, "\(random.reproduceHint)")
        }
    }
}
