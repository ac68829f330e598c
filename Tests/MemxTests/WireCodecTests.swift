import MemxTesting
import RemoteMem
import Testing

/// The MemX wire format (docs/PROTOCOL.md, "Frame"): headers round-trip at the documented
/// offsets, `FrameDecoder` reassembles frames from any split of the stream (style rule 13's
/// drip feed), refuses an oversized length before buffering its payload, and `PayloadReader`
/// never reads past a payload or accepts a bad name or blob.
@Suite("Wire codec")
struct WireCodecTests {
    // MARK: - Samples

    /// A random request header with a payload the server's limits accept, and that payload.
    static func randomFrame(_ random: inout SeededRandom, id: UInt64) -> (header: FrameHeader, payload: [UInt8]) {
        let opcode = random.pick([Opcode.ping, .write, .read, .trim, .volumeCreate, .metadataPut, .serverStat])
        var header = FrameHeader(opcode: opcode, requestID: id, volume: UInt32.random(in: 0...9, using: &random),
                                 epoch: random.next(), page: random.next() >> 20)
        let payload: [UInt8]
        switch opcode {
        case .write:
            header.pageCount = UInt32.random(in: 1...WireLimits.pagesPerRequestMax, using: &random)
            payload = random.bytes(Int(header.pageCount) * WireLimits.pageSize)
        case .read, .trim:
            header.pageCount = UInt32.random(in: 1...WireLimits.pagesPerRequestMax, using: &random)
            payload = []
        case .metadataPut:
            payload = random.bytes(Int.random(in: 20...3000, using: &random))
        case .serverStat:
            payload = []
        default:
            payload = random.bytes(Int.random(in: 0...WireLimits.smallPayloadBytesMax, using: &random))
        }
        header.length = UInt32(payload.count)
        return (header, payload)
    }

    static func stream(_ frames: [(header: FrameHeader, payload: [UInt8])]) -> [UInt8] {
        frames.flatMap { $0.header.bytes + $0.payload }
    }

    // MARK: - Header

    @Test("a header round-trips, every field at its documented offset, little-endian")
    func headerRoundTrip() {
        let header = FrameHeader(length: 0x0403_0201, rawOpcode: 0x0605, rawStatus: 0x0807, requestID: 0x100f_0e0d_0c0b_0a09,
                                 volume: 0x1413_1211, pageCount: 0x1817_1615, epoch: 0x201f_1e1d_1c1b_1a19,
                                 page: 0x2827_2625_2423_2221)
        #expect(header.bytes == (1...40).map { UInt8($0) })
        #expect(header.bytes.withUnsafeBytes { FrameHeader.decode($0) } == header)
        var random = SeededRandom(environmentOr: 0x5752_4831)
        for _ in 0..<500 {
            let sample = FrameHeader(length: UInt32.random(in: 0...UInt32.max, using: &random),
                                     rawOpcode: UInt16.random(in: 0...UInt16.max, using: &random),
                                     rawStatus: UInt16.random(in: 0...UInt16.max, using: &random), requestID: random.next(),
                                     volume: UInt32.random(in: 0...UInt32.max, using: &random),
                                     pageCount: UInt32.random(in: 0...UInt32.max, using: &random), epoch: random.next(),
                                     page: random.next())
            #expect(sample.bytes.withUnsafeBytes { FrameHeader.decode($0) } == sample, "\(random.reproduceHint)")
        }
        let reply = header.reply(status: .fenced, length: 12)
        #expect(reply.statusValue == .fenced && reply.length == 12 && reply.requestID == header.requestID)
    }

    // MARK: - Decoder

    @Test("frames fed one byte at a time come out whole, each only once its last byte is in")
    func dripFeedOneByteAtATime() throws {
        var random = SeededRandom(environmentOr: 0x4452_4950)
        let frames = (0..<40).map { Self.randomFrame(&random, id: UInt64($0)) }
        var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
        var decoded: [(header: FrameHeader, payload: [UInt8])] = []
        var boundaries = Set<Int>()
        var offset = 0
        for frame in frames {
            offset += FrameHeader.sizeBytes + frame.payload.count
            boundaries.insert(offset)
        }
        for (index, byte) in Self.stream(frames).enumerated() {
            decoder.append(CollectionOfOne(byte))
            let next = try decoder.next()
            #expect((next != nil) == boundaries.contains(index + 1), "byte \(index): \(random.reproduceHint)")
            if let next { decoded.append(next) }
        }
        #expect(decoded.count == frames.count)
        for (got, sent) in zip(decoded, frames) {
            #expect(got.header == sent.header && got.payload == sent.payload)
        }
        #expect(decoder.bufferedBytes == 0)
    }

    @Test("frames fed in random splits come out whole and in order (seeded)")
    func randomSplits() throws {
        var random = SeededRandom(environmentOr: 0x5350_4c54)
        for round in 0..<20 {
            let frames = (0..<12).map { Self.randomFrame(&random, id: UInt64(round * 100 + $0)) }
            let bytes = Self.stream(frames)
            var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
            var decoded: [(header: FrameHeader, payload: [UInt8])] = []
            var offset = 0
            while offset < bytes.count {
                let piece = min(bytes.count - offset, random.pick([1, 2, 39, 40, 41, 4096, 7000, 70_000]))
                decoder.append(bytes[offset..<(offset + piece)])
                offset += piece
                while let frame = try decoder.next() { decoded.append(frame) }
            }
            #expect(decoded.count == frames.count, "round \(round): \(random.reproduceHint)")
            for (got, sent) in zip(decoded, frames) {
                #expect(got.header == sent.header && got.payload == sent.payload, "round \(round): \(random.reproduceHint)")
            }
        }
    }

    @Test("a truncated frame yields nothing until it is complete, whatever byte is missing")
    func truncatedFrames() throws {
        var random = SeededRandom(environmentOr: 0x5452_554e)
        let frame = Self.randomFrame(&random, id: 7)
        let bytes = Self.stream([frame])
        for cut in [0, 1, 20, 39, 40, 41, bytes.count - 1] where cut < bytes.count {
            var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
            decoder.append(bytes[..<cut])
            #expect(try decoder.next() == nil, "cut at \(cut)")
            #expect(decoder.bufferedBytes == cut)
            decoder.append(bytes[cut...])
            let whole = try #require(try decoder.next())
            #expect(whole.header == frame.header && whole.payload == frame.payload)
        }
    }

    @Test("an oversized length is refused as soon as the header is in, before any payload is buffered")
    func oversizedLengthRefusedEarly() throws {
        let cases: [FrameHeader] = [
            FrameHeader(length: UInt32(WireLimits.smallPayloadBytesMax + 1), opcode: .ping, requestID: 1),
            FrameHeader(length: UInt32(3 * WireLimits.pageSize), opcode: .write, requestID: 2, pageCount: 2),
            FrameHeader(length: UInt32(33 * WireLimits.pageSize), opcode: .write, requestID: 3, pageCount: 33),
            FrameHeader(length: UInt32(WireLimits.payloadBytesMax + 1), opcode: .metadataPut, requestID: 4),
            FrameHeader(length: 1, opcode: .read, requestID: 5, pageCount: 1).withLength(UInt32.max),
            FrameHeader(length: UInt32(WireLimits.smallPayloadBytesMax + 1), rawOpcode: 999, rawStatus: 0, requestID: 6,
                        volume: 0, pageCount: 0, epoch: 0, page: 0),
        ]
        for header in cases {
            var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
            decoder.append(header.bytes)
            #expect(throws: FrameError.self, "opcode \(header.opcode) length \(header.length)") { try decoder.next() }
            #expect(decoder.bufferedBytes == FrameHeader.sizeBytes)
        }
        var atLimit = FrameDecoder(limit: FrameDecoder.requestLimit)
        atLimit.append(FrameHeader(length: UInt32(WireLimits.smallPayloadBytesMax), opcode: .ping, requestID: 9).bytes)
        #expect(try atLimit.next() == nil)
    }

    // MARK: - Payloads

    @Test("PayloadReader: fields round-trip; short payloads, trailing bytes, bad names and big blobs are refused")
    func payloadReaderBounds() throws {
        var writer = PayloadWriter()
        writer.u16(0xbeef)
        writer.u32(0xdead_beef)
        writer.u64(0x0123_4567_89ab_cdef)
        writer.name("vol-1.a_b")
        writer.blob([1, 2, 3])
        var reader = PayloadReader(writer.bytes)
        #expect(try reader.u16() == 0xbeef)
        #expect(try reader.u32() == 0xdead_beef)
        #expect(try reader.u64() == 0x0123_4567_89ab_cdef)
        #expect(try reader.name() == "vol-1.a_b")
        #expect(try reader.blob(limit: 3) == [1, 2, 3])
        try reader.finish()

        var short = PayloadReader([1, 2, 3, 4])
        #expect(throws: FrameError.truncated(have: 4, need: 8)) { try short.u64() }
        var trailing = PayloadReader([1, 0, 9])
        #expect(try trailing.u16() == 1)
        #expect(throws: FrameError.self) { try trailing.finish() }

        for bad in ["", ".hidden", "a/b", "space here", "ünïcode", String(repeating: "x", count: 65)] {
            var named = PayloadWriter()
            named.name(bad)
            var badReader = PayloadReader(named.bytes)
            #expect(throws: FrameError.self, "name '\(bad)'") { try badReader.name() }
        }
        var longName = PayloadReader([10, 0, 0x61, 0x62])  // says 10 bytes, has 2
        #expect(throws: FrameError.truncated(have: 2, need: 10)) { try longName.name() }
        #expect(WireLimits.isValidName(String(repeating: "x", count: 64)))

        var big = PayloadWriter()
        big.blob([UInt8](repeating: 7, count: 17))
        var bigReader = PayloadReader(big.bytes)
        #expect(throws: FrameError.self) { try bigReader.blob(limit: 16) }
        var lying = PayloadReader([0xff, 0xff, 0, 0, 1, 2])  // claims 65535 bytes, has 2
        #expect(throws: FrameError.self) { try lying.blob(limit: 1 << 20) }
    }
}

extension FrameHeader {
    fileprivate func withLength(_ length: UInt32) -> FrameHeader {
        var copy = self
        copy.length = length
        return copy
    }

}

@Suite("Hot-page list")
struct HotPageListTests {
    @Test("hot-page list: pages become sorted runs, round-trip; runs outside the volume or a short payload are refused")
    func hotPageList() throws {
        let list = HotPageList(pages: [7, 3, 4, 5, 5, 100, 6, 101, 0])
        #expect(list.runs == [.init(firstPage: 0, pageCount: 1), .init(firstPage: 3, pageCount: 5),
                              .init(firstPage: 100, pageCount: 2)])
        #expect(list.pageCount == 8)
        #expect(try HotPageList(decoding: list.encoded(), pageCount: 102) == list)
        #expect(throws: FrameError.self) { try HotPageList(decoding: list.encoded(), pageCount: 101) }
        #expect(throws: FrameError.self) { try HotPageList(decoding: Array(list.encoded().dropLast()), pageCount: 1000) }
        var zeroRun = PayloadWriter()
        zeroRun.u32(1)
        zeroRun.u64(0)
        zeroRun.u32(0)
        #expect(throws: FrameError.self) { try HotPageList(decoding: zeroRun.bytes, pageCount: 1000) }
        // A scattered cache larger than the list can hold is cut, not overflowed.
        let scattered = HotPageList(pages: (0..<50_000).map { UInt64($0) * 2 })
        #expect(scattered.encoded().count <= WireLimits.hotPagesBytesMax)
    }
}
