import GuestMemory
import MemoryServer
import MemxTesting
import RemoteMem
import Testing
import VhostUser
import Virtio

/// Seeded fuzzing of the parsers that take bytes from a peer: the memory server's frame path
/// (`FrameDecoder` + `RequestHandler` on a real store, `ServerFrameHarness`), the wire payload
/// decoders a client runs on replies, the group table, and the vhost-user codec + `BackendSession`
/// (`VhostUserHarness`). The harnesses are shared with the libFuzzer targets in `Fuzz/`.
///
/// Seeded from `MEMX_FUZZ_SEED` (else `MEMX_SEED`; default fixed); iterations from
/// `MEMX_FUZZ_ITERATIONS` (default: a few seconds for CI; the long run sets millions). Every
/// failure names the seed and the iteration.
@Suite("Fuzzing")
struct FuzzTests {
    static let iterations = TestEnvironment.fuzzIterations(default: 2000)

    static func random(_ defaultSeed: UInt64) -> (SeededRandom, String) {
        let seed = TestEnvironment.fuzzSeed(default: defaultSeed)
        return (SeededRandom(seed: seed), "reproduce with MEMX_FUZZ_SEED=\(seed) MEMX_FUZZ_ITERATIONS=\(iterations)")
    }

    // MARK: - Server frames: generators

    static let knownOpcodes: [UInt16] = ServerCounters.allOpcodes.map(\.rawValue)

    static func nameBytes(_ r: inout SeededRandom) -> [UInt8] {
        let alphabet = Array("abcXYZ019._-".utf8)
        switch UInt64.random(in: 0..<10, using: &r) {
        case 0...2: return Array(ServerFrameHarness.volumeName.utf8)
        case 3...5: return Array(r.pick(["a", "b", "vol-1", "X.y_z"]).utf8)
        case 6: return (0..<Int.random(in: 1...64, using: &r)).map { i in i == 0 ? UInt8(ascii: "n") : r.pick(alphabet) }
        case 7: return r.pick([[], Array(".hidden".utf8), [UInt8](repeating: 0x61, count: 65), Array("a/b".utf8)])
        case 8: return r.bytes(Int.random(in: 0...70, using: &r))  // any bytes, invalid UTF-8 too
        default: return [UInt8](repeating: 0x7a, count: 64)
        }
    }

    static func u64(_ r: inout SeededRandom, near values: [UInt64]) -> UInt64 {
        switch UInt64.random(in: 0..<8, using: &r) {
        case 0...4: return r.pick(values)
        case 5: return r.pick(values) &+ r.pick([1, UInt64.max])
        case 6: return UInt64.max - UInt64.random(in: 0...2, using: &r)
        default: return r.next()
        }
    }

    /// A payload that is right for `opcode` most of the time, near-right or random otherwise.
    static func payload(_ opcode: UInt16, pageCount: UInt32, _ r: inout SeededRandom) -> [UInt8] {
        var w = PayloadWriter()
        func name() {
            let bytes = nameBytes(&r)
            w.u16(r.chance(1, in: 20) ? UInt16.random(in: 0...UInt16.max, using: &r) : UInt16(bytes.count))
            w.raw(bytes)
        }
        switch Opcode(rawValue: opcode) {
        case .hello:
            w.u64(r.chance(9, in: 10) ? WireLimits.magic : r.next())
            w.u16(r.chance(9, in: 10) ? WireLimits.version : UInt16.random(in: 0...3, using: &r))
            w.u16(0); w.u32(0)
            w.raw(r.bytes(16))
        case .auth: w.raw(r.bytes(r.pick([32, 32, 31, 33, 0])))
        case .serverDrain: w.raw(r.chance(9, in: 10) ? [0] : r.bytes(r.pick([1, 0, 2])))
        case .volumeCreate:
            w.u64(u64(&r, near: [4096, 4096 * 64, 0, 4095, WireLimits.volumeBytesMax, WireLimits.volumeBytesMax + 4096]))
            name()
            // The optional flags: absent, NO_DEDUP, or an unknown bit (INVALID).
            if r.chance(1, in: 3) { w.u32(r.pick([0, DedupMessages.volumeFlagNoDedup, 2, UInt32(truncatingIfNeeded: r.next())])) }
        case .volumeOpen:
            w.u64(u64(&r, near: [0, 1, 2, 100]))
            name()
        case .volumeDelete, .volumeStat, .volumeDedupStat: name()
        case .volumeClone:
            w.u32(r.chance(9, in: 10) ? r.pick([0, DedupMessages.volumeFlagNoDedup]) : UInt32(truncatingIfNeeded: r.next()))
            name()
            name()
        case .metadataPut:
            w.u64(u64(&r, near: [0, 0, 1, 2])); w.u64(u64(&r, near: [1, 2, 3]))
            let metadata = r.bytes(Int.random(in: 0...200, using: &r))
            w.u32(r.chance(1, in: 10) ? UInt32(WireLimits.metadataBytesMax + 1) : UInt32(metadata.count))
            w.raw(metadata)
        case .hotPagesPut:
            let list = r.bytes(Int.random(in: 0...200, using: &r))
            w.u32(r.chance(1, in: 10) ? UInt32(WireLimits.hotPagesBytesMax + 1) : UInt32(list.count))
            w.raw(list)
        case .write:
            if pageCount <= WireLimits.pagesPerRequestMax || r.chance(1, in: 2) {
                let pages = Int(min(pageCount, WireLimits.pagesPerRequestMax))
                // Page contents do not steer the handler: one random byte per page keeps it cheap.
                for _ in 0..<pages { w.raw([UInt8](repeating: UInt8.random(in: 0...255, using: &r), count: WireLimits.pageSize)) }
            }
        case .ping: w.raw(r.bytes(Int.random(in: 0...64, using: &r)))
        case .volumeClose, .volumeList, .serverStat, .read, .trim, .hotPagesGet, .dedupStat: break
        case nil: w.raw(r.bytes(Int.random(in: 0...64, using: &r)))
        }
        var bytes = w.bytes
        if r.chance(1, in: 8) { mutate(&bytes, &r) }
        return bytes
    }

    /// One random edit: a bit flip, a truncation, an extension, or a byte set to an extreme.
    static func mutate(_ bytes: inout [UInt8], _ r: inout SeededRandom) {
        switch UInt64.random(in: 0..<4, using: &r) {
        case 0 where !bytes.isEmpty:
            let i = Int.random(in: 0..<bytes.count, using: &r)
            bytes[i] ^= 1 << UInt8.random(in: 0...7, using: &r)
        case 1 where !bytes.isEmpty: bytes.removeLast(Int.random(in: 1...bytes.count, using: &r))
        case 2: bytes += r.bytes(Int.random(in: 1...9, using: &r))
        default:
            if !bytes.isEmpty { bytes[Int.random(in: 0..<bytes.count, using: &r)] = r.pick([0, 0xff, 0x80, 0x7f]) }
        }
    }

    /// A frame for the harness's store: mostly its volume, epoch and a page range near the
    /// volume's bounds; every opcode, known and not.
    static func frame(_ r: inout SeededRandom, harness: ServerFrameHarness) -> [UInt8] {
        let opcode: UInt16 = r.chance(9, in: 10) ? r.pick(knownOpcodes)
                                                 : r.pick([0, 5, 9, 17, 19, 23, 0xffff, UInt16.random(in: 0...UInt16.max, using: &r)])
        let epoch = (try? harness.store.stat(name: ServerFrameHarness.volumeName).epoch) ?? harness.volumeEpoch
        let pages = ServerFrameHarness.volumePages
        let pageCount: UInt32 = opcode == Opcode.write.rawValue && r.chance(1, in: 2) ? UInt32.random(in: 8...32, using: &r)
            : r.chance(2, in: 3) ? UInt32.random(in: 1...8, using: &r)
            : r.pick([0, 1, 32, 33, WireLimits.trimPagesMax, WireLimits.trimPagesMax + 1, UInt32.max, UInt32(truncatingIfNeeded: r.next())])
        var header = FrameHeader(length: 0, rawOpcode: opcode, rawStatus: r.chance(1, in: 10) ? UInt16.random(in: 0...20, using: &r) : 0,
                                 requestID: r.next(),
                                 volume: r.chance(8, in: 10) ? harness.volumeHandle : r.pick([0, 2, 3, UInt32.max, UInt32(truncatingIfNeeded: r.next())]),
                                 pageCount: pageCount,
                                 epoch: r.chance(8, in: 10) ? epoch : u64(&r, near: [0, epoch &- 1, epoch &+ 1]),
                                 page: r.chance(8, in: 10) ? UInt64.random(in: 0..<pages, using: &r)
                                     : u64(&r, near: [0, pages - 1, pages, pages - UInt64(min(pageCount, 32))]))
        let body = payload(opcode, pageCount: pageCount, &r)
        header.length = UInt32(body.count)
        if r.chance(1, in: 30) {  // a length at or over the limit, or nonsense
            let limit = FrameDecoder.requestLimit(header)
            header.length = r.pick([UInt32(limit), UInt32(limit + 1), UInt32.max, UInt32(WireLimits.payloadBytesMax + 1)])
        }
        return header.bytes + body
    }

    // MARK: - Server frames: properties

    @Test("random and mutated frames through FrameDecoder + RequestHandler: replies well-formed, arena accounting exact")
    func serverFrames() throws {
        var (r, hint) = Self.random(0xf022_0001)
        var harness = try ServerFrameHarness()
        var statuses: [UInt16: Int] = [:]
        var handled = 0, refused = 0
        for iteration in 0..<Self.iterations {
            // A fresh server once its volume was deleted, so one DELETE does not starve the rest.
            if iteration % 1000 == 0 || (try? harness.store.stat(name: ServerFrameHarness.volumeName)) == nil {
                for (s, n) in harness.statuses { statuses[s, default: 0] += n }
                handled += harness.framesHandled; refused += harness.framesRefused
                harness = try ServerFrameHarness()
            }
            var stream: [UInt8] = []
            for _ in 0..<Int.random(in: 1...4, using: &r) { stream += Self.frame(&r, harness: harness) }
            if r.chance(1, in: 6) { Self.mutate(&stream, &r) }
            let cuts = (0..<Int.random(in: 0...3, using: &r)).map { _ in Int.random(in: 0...stream.count, using: &r) }.sorted()
            if let violation = harness.run(stream: stream, cuts: cuts) {
                Issue.record("iteration \(iteration): \(violation); \(hint)")
                return
            }
        }
        for (s, n) in harness.statuses { statuses[s, default: 0] += n }
        handled += harness.framesHandled; refused += harness.framesRefused
        // The generator must reach the interesting outcomes, or passing says little.
        if Self.iterations >= 1000 {
            let wanted: [WireStatus] = [.ok, .notFound, .exists, .full, .fenced, .invalid, .conflict, .unsupported, .unsupportedVersion]
            let missing = wanted.filter { statuses[$0.rawValue, default: 0] == 0 }
            #expect(missing.isEmpty, "statuses never answered: \(missing); \(hint)")
            #expect(refused > 0 && refused < handled, "\(refused) of \(handled) frames refused; \(hint)")
        }
    }

    @Test("a frame stream cut anywhere decodes to the same frames; a header over its limit is refused before its payload")
    func frameDecoderPieces() {
        var (r, hint) = Self.random(0xf022_0002)
        for iteration in 0..<Self.iterations {
            var stream: [UInt8] = []
            var expected: [FrameHeader] = []
            for _ in 0..<Int.random(in: 1...5, using: &r) {
                let body = r.bytes(Int.random(in: 0...600, using: &r))
                let header = FrameHeader(length: UInt32(body.count), rawOpcode: r.pick([2, 10, 15, 99]), rawStatus: 0,
                                         requestID: r.next(), volume: 1, pageCount: 0, epoch: 0, page: 0)
                stream += header.bytes + body
                expected.append(header)
            }
            let oversize = r.chance(1, in: 4)
            if oversize {
                let header = FrameHeader(length: UInt32(WireLimits.smallPayloadBytesMax + 1), rawOpcode: 2, rawStatus: 0,
                                         requestID: 7, volume: 0, pageCount: 0, epoch: 0, page: 0)
                stream += header.bytes  // no payload follows: the decoder must not wait for it
            }
            var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
            var got: [FrameHeader] = []
            var refusedOversize = false
            var start = 0
            let cuts = (0..<Int.random(in: 0...6, using: &r)).map { _ in Int.random(in: 0...stream.count, using: &r) }.sorted() + [stream.count]
            for end in cuts where end >= start {
                decoder.append(stream[start..<end])
                start = end
                do {
                    while let frame = try decoder.next() {
                        #expect(frame.payload.count == Int(frame.header.length), "iteration \(iteration); \(hint)")
                        got.append(frame.header)
                    }
                } catch {
                    refusedOversize = error == .payloadTooLarge(opcode: 2, length: UInt32(WireLimits.smallPayloadBytesMax + 1),
                                                                limit: WireLimits.smallPayloadBytesMax)
                    break
                }
            }
            #expect(got == expected && refusedOversize == oversize, "iteration \(iteration): \(got.count) of \(expected.count) frames; \(hint)")
            if got != expected || refusedOversize != oversize { return }
        }
    }

    // MARK: - Server: stateful, against a model

    /// What a volume holds, as the model sees it. Pages are written as one byte repeated, so a
    /// page's content is that byte: random writes repeat contents often, which is what
    /// de-duplication needs to be exercised.
    struct ModelVolume {
        var sizePages: UInt64
        var handle: UInt32
        var deduplicates = true
        var epoch: UInt64 = 0
        var leaseHeld = false
        var metadataVersion: UInt64 = 0
        var pages: [UInt64: UInt8] = [:]
    }

    /// The frames a model's volumes need: one per distinct content among the pages of
    /// de-duplicating volumes, one per page of the others.
    static func modelFrames(_ model: [String: ModelVolume]) -> Int {
        var contents = Set<UInt8>()
        var privatePages = 0
        for volume in model.values {
            if volume.deduplicates { contents.formUnion(volume.pages.values) } else { privatePages += volume.pages.count }
        }
        return contents.count + privatePages
    }

    @Test("valid requests in random order match a dictionary model: data, statuses, epochs, frames used and shared")
    func serverAgainstModel() throws {
        try runServerModel(seed: 0xf022_0003, hasher: .random(), exactFrames: true)
    }

    @Test("the same with a deliberately weak hash (every page collides, or 3 bits): data and share counts stay right")
    func serverAgainstModelWithCollisions() throws {
        // Room for every page, so no FULL: with colliding hashes the index compares only a few
        // candidates per page, so it may store a content twice and the model cannot predict
        // frames exactly; data, statuses and the audit of share counts it can.
        try runServerModel(seed: 0xf022_0005, hasher: .truncated(toBits: 0), exactFrames: false)
        try runServerModel(seed: 0xf022_0006, hasher: .truncated(toBits: 3), exactFrames: false)
    }

    func runServerModel(seed: UInt64, hasher: PageHasher, exactFrames: Bool) throws {
        var (r, hint) = Self.random(seed)
        let capacity = exactFrames ? ServerFrameHarness.capacityFrames : 2048
        let harness = try ServerFrameHarness(hasher: hasher, capacityFrames: capacity)
        var model: [String: ModelVolume] = [:]
        // The harness's own volume, opened once.
        model[ServerFrameHarness.volumeName] = ModelVolume(sizePages: ServerFrameHarness.volumePages, handle: harness.volumeHandle,
                                                           epoch: harness.volumeEpoch, leaseHeld: true)
        var nextHandle = harness.volumeHandle + 1
        var deadHandles: [UInt32] = []
        let names = [ServerFrameHarness.volumeName, "a", "b", "c"]
        var outcomes: [String: Int] = [:]
        func send(_ opcode: Opcode, volume: UInt32 = 0, epoch: UInt64 = 0, page: UInt64 = 0, pageCount: UInt32 = 0,
                  _ payload: [UInt8] = []) -> Reply? {
            let header = FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: r.next(), volume: volume,
                                     pageCount: pageCount, epoch: epoch, page: page)
            let (result, violation) = harness.handle(header, payload: payload)
            if let violation { Issue.record("\(violation); \(hint)"); return nil }
            guard case .success(let reply) = result else { Issue.record("valid \(opcode) refused: \(result); \(hint)"); return nil }
            return reply
        }
        /// The status a data request must get (the store's order of checks).
        func dataStatus(_ v: ModelVolume?, epoch: UInt64, page: UInt64, count: UInt32, max: UInt32) -> WireStatus {
            guard count >= 1, count <= max else { return .invalid }
            guard let v else { return .notFound }
            guard page < v.sizePages, UInt64(count) <= v.sizePages - page else { return .invalid }
            if epoch < v.epoch { return .fenced }
            if epoch > v.epoch { return .invalid }
            return v.leaseHeld ? .ok : .fenced
        }
        /// FULL if the model after a change needs more frames than the arena has (what the
        /// store's all-or-nothing rules amount to), else `status`.
        func unlessFull(_ status: WireStatus, after changed: [String: ModelVolume]) -> WireStatus {
            status == .ok && exactFrames && Self.modelFrames(changed) > capacity ? .full : status
        }
        for iteration in 0..<(Self.iterations * 2) {
            let name = r.pick(names)
            var volume = model[name]
            // No volume by that name: a handle the server never issued, or one of a deleted volume.
            let handle = volume?.handle ?? (deadHandles.isEmpty || r.chance(1, in: 2) ? nextHandle + 1000 : r.pick(deadHandles))
            let epoch = r.chance(9, in: 10) ? (volume?.epoch ?? 0) : Self.u64Near(&r, volume?.epoch ?? 0)
            let sizePages = volume?.sizePages ?? 1
            let count = UInt32(r.chance(19, in: 20) ? Int.random(in: 1...8, using: &r) : r.pick([0, 32, 33]))
            let page = r.chance(9, in: 10) ? UInt64.random(in: 0..<sizePages, using: &r) : sizePages - 1
            let expectedWrite = dataStatus(volume, epoch: epoch, page: page, count: count, max: WireLimits.pagesPerRequestMax)
            let op = UInt64.random(in: 0..<100, using: &r)
            let where_ = "iteration \(iteration) op \(op) on '\(name)'"
            switch op {
            case 0..<30:  // WRITE
                // Contents from a small alphabet, so pages repeat within and across volumes.
                let contents = (0..<Int(count)).map { _ in UInt8.random(in: 0...11, using: &r) &* 21 }
                let data = contents.flatMap { [UInt8](repeating: $0, count: WireLimits.pageSize) }
                guard let reply = send(.write, volume: handle, epoch: epoch, page: page, pageCount: count, data) else { return }
                var expected = expectedWrite
                if expected == .ok, var v = volume {
                    for (i, content) in contents.enumerated() { v.pages[page + UInt64(i)] = content }
                    var after = model
                    after[name] = v
                    expected = unlessFull(expected, after: after)
                    if expected == .ok { volume = v }
                }
                #expect(reply.header.statusValue == expected, "\(where_): WRITE status \(reply.header.status), model \(expected); \(hint)")
                outcomes["WRITE \(expected)", default: 0] += 1
            case 30..<50:  // READ
                guard let reply = send(.read, volume: handle, epoch: epoch, page: page, pageCount: count) else { return }
                #expect(reply.header.statusValue == expectedWrite, "\(where_): READ; \(hint)")
                if expectedWrite == .ok, let v = volume {
                    for i in 0..<Int(count) {
                        let got = UnsafeRawBufferPointer(rebasing: harness.pageBuffer[(i * 4096)..<((i + 1) * 4096)])
                        let want = v.pages[page + UInt64(i)] ?? 0
                        if !got.allSatisfy({ $0 == want }) {
                            Issue.record("\(where_): READ page \(page + UInt64(i)) differs from the model; \(hint)")
                            return
                        }
                    }
                }
                outcomes["READ \(expectedWrite)", default: 0] += 1
            case 50..<58:  // TRIM
                guard let reply = send(.trim, volume: handle, epoch: epoch, page: page, pageCount: count) else { return }
                let expected = dataStatus(volume, epoch: epoch, page: page, count: count, max: WireLimits.trimPagesMax)
                #expect(reply.header.statusValue == expected, "\(where_): TRIM; \(hint)")
                if expected == .ok { for i in 0..<UInt64(count) { volume?.pages[page + i] = nil } }
            case 58..<66:  // VOLUME_OPEN
                let minimum = r.chance(1, in: 4) ? UInt64.random(in: 0...(min(epoch, 1 << 40) + 3), using: &r) : 0
                guard let reply = send(.volumeOpen, WireMessages.volumeOpen(name: name, minimumEpoch: minimum)) else { return }
                if var v = volume {
                    v.epoch = max(v.epoch + 1, minimum)
                    v.leaseHeld = true
                    volume = v
                    let answered = reply.header
                    #expect(answered.statusValue == WireStatus.ok && answered.volume == v.handle && answered.epoch == v.epoch,
                            "\(where_): OPEN \(answered); \(hint)")
                } else {
                    #expect(reply.header.statusValue == WireStatus.notFound, "\(where_): OPEN; \(hint)")
                }
            case 66..<70:  // VOLUME_CLOSE
                guard let reply = send(.volumeClose, volume: handle, epoch: epoch) else { return }
                var expected = WireStatus.notFound
                if var v = volume {
                    expected = epoch < v.epoch ? .fenced : epoch > v.epoch ? .invalid : .ok
                    if expected == .ok { v.leaseHeld = false; volume = v }
                }
                #expect(reply.header.statusValue == expected, "\(where_): CLOSE; \(hint)")
            case 70..<76:  // VOLUME_CREATE, with de-duplication off one time in four
                let pages = UInt64.random(in: 1...64, using: &r)
                let deduplicate = !r.chance(1, in: 4)
                let flags = deduplicate ? 0 : DedupMessages.volumeFlagNoDedup
                guard let reply = send(.volumeCreate, DedupMessages.volumeCreate(name: name, sizeBytes: pages * 4096, flags: flags))
                else { return }
                #expect(reply.header.statusValue == (volume == nil ? .ok : .exists), "\(where_): CREATE; \(hint)")
                if volume == nil {
                    volume = ModelVolume(sizePages: pages, handle: nextHandle, deduplicates: deduplicate)
                    nextHandle += 1
                }
            case 76..<82:  // VOLUME_CLONE of another name (or itself: INVALID)
                let template = r.pick(names)
                let deduplicate = !r.chance(1, in: 4)
                let flags = deduplicate ? 0 : DedupMessages.volumeFlagNoDedup
                guard let reply = send(.volumeClone, DedupMessages.volumeClone(template: template, name: name, flags: flags))
                else { return }
                var expected = WireStatus.ok
                var clone: ModelVolume?
                if template == name {
                    expected = .invalid
                } else if let source = model[template] {
                    if volume != nil {
                        expected = .exists
                    } else {
                        clone = ModelVolume(sizePages: source.sizePages, handle: nextHandle, deduplicates: deduplicate,
                                            metadataVersion: source.metadataVersion, pages: source.pages)
                        var after = model
                        after[name] = clone
                        expected = unlessFull(.ok, after: after)
                    }
                } else {
                    expected = .notFound
                }
                #expect(reply.header.statusValue == expected, "\(where_): CLONE of '\(template)' \(reply.header.status), model \(expected); \(hint)")
                if expected == .ok, let clone {
                    volume = clone
                    nextHandle += 1
                    if case .bytes(let bytes) = reply.payload {
                        #expect(try CloneResult(bytes).pages == UInt64(clone.pages.count), "\(where_): CLONE; \(hint)")
                    }
                }
                outcomes["CLONE \(expected)", default: 0] += 1
            case 82..<85:  // VOLUME_DELETE
                guard let reply = send(.volumeDelete, WireMessages.name(name)) else { return }
                #expect(reply.header.statusValue == (volume == nil ? .notFound : .ok), "\(where_): DELETE; \(hint)")
                if let v = volume { deadHandles.append(v.handle) }
                volume = nil
            case 85..<89:  // METADATA_PUT
                let current = volume?.metadataVersion ?? 0
                let expectedVersion = r.chance(3, in: 4) ? current : current + 1
                guard let reply = send(.metadataPut, volume: handle, epoch: epoch,
                                       WireMessages.metadataPut(expectedVersion: expectedVersion, newVersion: current + 1,
                                                                metadata: r.bytes(Int.random(in: 0...64, using: &r))))
                else { return }
                var expected = WireStatus.notFound
                if let v = volume {
                    expected = epoch < v.epoch ? .fenced : epoch > v.epoch ? .invalid : !v.leaseHeld ? .fenced
                        : expectedVersion != current ? .conflict : .ok
                    if expected == .ok { volume?.metadataVersion = current + 1 }
                }
                #expect(reply.header.statusValue == expected, "\(where_): METADATA_PUT; \(hint)")
            case 89..<93:  // VOLUME_DEDUP_STAT: the policy, pages, and pages sharing a frame
                guard let reply = send(.volumeDedupStat, WireMessages.name(name)) else { return }
                if let v = volume, case .bytes(let bytes) = reply.payload {
                    let stat = try VolumeDedupStatistics(bytes)
                    var uses: [UInt8: Int] = [:]
                    for other in model.values where other.deduplicates { for c in other.pages.values { uses[c, default: 0] += 1 } }
                    let shared = v.deduplicates && exactFrames ? UInt64(v.pages.values.filter { uses[$0, default: 0] > 1 }.count) : stat.sharedPages
                    #expect(stat.deduplicates == v.deduplicates && stat.logicalPages == UInt64(v.pages.count) && stat.sharedPages == shared,
                            "\(where_): VOLUME_DEDUP_STAT \(stat), \(shared) shared in the model; \(hint)")
                } else {
                    #expect(volume == nil && reply.header.statusValue == .notFound, "\(where_): VOLUME_DEDUP_STAT; \(hint)")
                }
            case 93..<95:  // DEDUP_STAT
                guard let reply = send(.dedupStat), case .bytes(let bytes) = reply.payload else { return }
                let stat = try DedupStatistics(bytes)
                let logical = model.values.reduce(0) { $0 + $1.pages.count }
                let privatePages = model.values.filter { !$0.deduplicates }.reduce(0) { $0 + $1.pages.count }
                #expect(stat.logicalPages == UInt64(logical) && stat.privatePages == UInt64(privatePages)
                        && stat.storedFrames == UInt64(harness.store.arena.usedFrames), "\(where_): DEDUP_STAT \(stat); \(hint)")
            default:  // VOLUME_STAT, decoded as a client decodes it
                guard let reply = send(.volumeStat, WireMessages.name(name)) else { return }
                if let v = volume, case .bytes(let bytes) = reply.payload {
                    let stat = try VolumeStatistics(bytes)
                    #expect(stat.sizeBytes == v.sizePages * 4096 && stat.storedPages == UInt64(v.pages.count)
                            && stat.epoch == v.epoch && stat.metadataVersion == v.metadataVersion, "\(where_): STAT \(stat); \(hint)")
                } else {
                    #expect(volume == nil && reply.header.statusValue == .notFound, "\(where_): STAT; \(hint)")
                }
            }
            model[name] = volume
            let used = harness.store.arena.usedFrames
            let frames = Self.modelFrames(model)
            let pagesHeld = model.values.reduce(0) { $0 + $1.pages.count }
            // Exact with the real hash; with a weak one, at least one frame per content and at most one per page.
            let agrees = exactFrames ? used == frames : (used >= frames && used <= pagesHeld)
            #expect(agrees, "\(where_): arena \(used), model \(frames) frames for \(pagesHeld) pages; \(hint)")
            if !agrees { return }
        }
        if Self.iterations >= 1000 && exactFrames {
            for wanted in ["WRITE OK", "WRITE FULL", "WRITE FENCED", "READ OK", "READ NOT_FOUND", "CLONE OK", "CLONE NOT_FOUND", "CLONE EXISTS"] {
                #expect(outcomes[wanted, default: 0] > 0, "never \(wanted): \(outcomes); \(hint)")
            }
        }
    }

    static func u64Near(_ r: inout SeededRandom, _ value: UInt64) -> UInt64 {
        r.pick([0, value &- 1, value &+ 1, UInt64.max])
    }

    // MARK: - Wire payload decoders

    /// Checks the decoder on `valid` (must decode to `expected`), on every truncation and on an
    /// extension (must throw), and on random mutations (must not crash).
    static func checkDecoder<T: Equatable>(_ name: String, _ valid: [UInt8], expected: T?, _ r: inout SeededRandom, hint: String,
                                           _ decode: ([UInt8]) throws(FrameError) -> T) {
        let decoded = Result { () throws(FrameError) in try decode(valid) }
        switch decoded {
        case .success(let value): if let expected { #expect(value == expected, "\(name): \(value) ≠ \(expected); \(hint)") }
        case .failure(let error): Issue.record("\(name): a valid payload refused: \(error); \(hint)")
        }
        for length in 0..<valid.count {
            #expect(throws: FrameError.self, "\(name) truncated to \(length); \(hint)") { try decode(Array(valid[..<length])) }
        }
        #expect(throws: FrameError.self, "\(name) with a trailing byte; \(hint)") { try decode(valid + [0]) }
        for _ in 0..<20 {
            var mutated = valid
            mutate(&mutated, &r)
            _ = try? decode(mutated)
        }
    }

    @Test("wire payload decoders: real replies decode to the server's state; truncated or padded ones throw; random bytes never crash")
    func wirePayloads() throws {
        var (r, hint) = Self.random(0xf022_0004)
        let harness = try ServerFrameHarness()
        func reply(_ opcode: Opcode, volume: UInt32 = 0, epoch: UInt64 = 0, _ payload: [UInt8] = []) throws -> [UInt8] {
            let header = FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: 1, volume: volume, epoch: epoch)
            guard case .success(let reply) = harness.handle(header, payload: payload).0, case .bytes(let bytes) = reply.payload else {
                throw FrameError.malformedPayload("no reply payload to \(opcode)")
            }
            return bytes
        }
        for round in 0..<max(1, Self.iterations / 100) {
            // Some state to describe: a few volumes, some pages, metadata.
            let name = "v\(round)"
            try harness.store.create(name: name, sizeBytes: UInt64.random(in: 1...64, using: &r) * 4096)
            let metadata = r.bytes(Int.random(in: 0...300, using: &r))
            let opened = try harness.store.open(name: name, minimumEpoch: UInt64.random(in: 0...5, using: &r))
            try harness.store.putMetadata(handle: opened.handle, epoch: opened.epoch, expectedVersion: 0, newVersion: 1, metadata: metadata)

            let hello = try reply(.hello, WireMessages.hello(nonce: r.bytes(16)))
            Self.checkDecoder("HELLO", hello, expected: nil as HelloReply?, &r, hint: hint) { bytes throws(FrameError) in
                let decoded = try HelloReply(bytes)
                guard decoded.version == WireLimits.version, decoded.serverID == harness.handler.serverID else {
                    throw .malformedPayload("HELLO reply decoded to \(decoded)")
                }
                return decoded
            }
            let stat = try ServerStatistics(try reply(.serverStat))
            #expect(stat.capacityFrames == UInt64(ServerFrameHarness.capacityFrames) && stat.volumeCount == UInt32(harness.store.volumeCount))
            Self.checkDecoder("SERVER_STAT", try reply(.serverStat), expected: nil as ServerStatistics?, &r, hint: hint) { b throws(FrameError) in try ServerStatistics(b) }
            let status = try harness.store.stat(name: name)
            Self.checkDecoder("VOLUME_STAT", try reply(.volumeStat, WireMessages.name(name)), expected: status, &r, hint: hint) { b throws(FrameError) in
                let s = try VolumeStatistics(b)
                return VolumeStatus(name: name, sizeBytes: s.sizeBytes, storedPages: s.storedPages, epoch: s.epoch, metadataVersion: s.metadataVersion)
            }
            Self.checkDecoder("VOLUME_OPEN", try reply(.volumeOpen, WireMessages.volumeOpen(name: name, minimumEpoch: 0)),
                              expected: metadata, &r, hint: hint) { b throws(FrameError) in try VolumeOpenReply(b).metadata }
            let listed = harness.store.list().map { VolumeListEntry(name: $0.name, sizeBytes: $0.sizeBytes, storedPages: $0.storedPages) }
            Self.checkDecoder("VOLUME_LIST", try reply(.volumeList), expected: listed, &r, hint: hint) { b throws(FrameError) in try VolumeListEntry.list(b) }
            let proof = r.bytes(ClusterKey.proofBytes)
            Self.checkDecoder("AUTH", WireMessages.auth(proof: proof), expected: proof, &r, hint: hint) { b throws(FrameError) in try WireMessages.authProof(b) }
            Self.checkDecoder("DEDUP_STAT", try reply(.dedupStat), expected: harness.store.dedupStatistics(), &r, hint: hint) {
                b throws(FrameError) in try DedupStatistics(b)
            }
            Self.checkDecoder("VOLUME_DEDUP_STAT", try reply(.volumeDedupStat, WireMessages.name(name)),
                              expected: try harness.store.volumeDedupStatistics(name: name), &r, hint: hint) {
                b throws(FrameError) in try VolumeDedupStatistics(b)
            }
            Self.checkDecoder("VOLUME_CLONE", try reply(.volumeClone, DedupMessages.volumeClone(template: name, name: name + "c", flags: 0)),
                              expected: CloneResult(pages: 0, framesTaken: 0), &r, hint: hint) { b throws(FrameError) in try CloneResult(b) }
            try harness.store.delete(name: name + "c")
            // Keep the list short: every truncation of it is decoded, so a long run would be quadratic.
            if round >= 3 { try harness.store.delete(name: "v\(round - 3)") }
        }
        // Pure noise, and a list that announces more volumes than it carries.
        for _ in 0..<Self.iterations {
            let noise = r.bytes(r.pick([0, 7, 8, 32, 40, 52, Int.random(in: 0...400, using: &r)]))
            _ = try? HelloReply(noise); _ = try? ServerStatistics(noise); _ = try? VolumeStatistics(noise)
            _ = try? VolumeOpenReply(noise); _ = try? VolumeListEntry.list(noise); _ = try? WireMessages.authProof(noise)
        }
        var huge = PayloadWriter()
        huge.u32(UInt32(WireLimits.volumesMax))
        #expect(throws: FrameError.self) { try VolumeListEntry.list(huge.bytes) }
    }

    @Test("group tables: random tables round-trip; mutated bytes decode to a consistent table or throw")
    func groupTables() {
        var (r, hint) = Self.random(0xf022_0005)
        var decodedMutants = 0
        for iteration in 0..<Self.iterations {
            var table = GroupTable(groupCount: Int.random(in: 0...300, using: &r), groupPages: r.pick([1, 1024, UInt64(UInt32.max)]),
                                   replicaCount: Int.random(in: 1...4, using: &r))
            let servers = (0..<Int.random(in: 1...8, using: &r)).map { _ in r.bytes(16) }
            for group in 0..<table.groupCount where r.chance(2, in: 3) { table.assign(group: group, to: r.pick(servers)) }
            let bytes = table.encoded()
            #expect((try? GroupTable(decoding: bytes)) == table, "iteration \(iteration): round trip; \(hint)")
            var mutated = bytes
            for _ in 0..<Int.random(in: 1...3, using: &r) { Self.mutate(&mutated, &r) }
            guard let decoded = try? GroupTable(decoding: mutated) else { continue }
            decodedMutants += 1
            // Whatever decoded must be usable: every entry names a known server.
            let counts = decoded.groupCounts()
            #expect(counts.count == decoded.serverIDs.count && counts.reduce(0, +) <= decoded.groupCount * decoded.replicaCount,
                    "iteration \(iteration); \(hint)")
            for group in 0..<decoded.groupCount {
                #expect(decoded.replicas(of: group).allSatisfy { $0 < decoded.serverIDs.count }, "iteration \(iteration); \(hint)")
            }
        }
        if Self.iterations >= 1000 { #expect(decodedMutants > 0, "no mutated table decoded; \(hint)") }
    }

    // MARK: - vhost-user

    /// A message the session may act on: mostly plausible values (QEMU's start-up sequence
    /// pieces, addresses inside the regions given), sometimes anything.
    static func vhostMessage(_ r: inout SeededRandom) -> (FrontendMessage, fds: Int) {
        let regionBase: UInt64 = 0x7f00_0000_0000
        let regionSize = UInt64(VhostUserHarness.memfdBytes)
        func size() -> UInt64 { r.chance(4, in: 5) ? regionSize : r.pick([0, 4096, UInt64(1) << 47, UInt64.max - 4095, r.next()]) }
        func region(_ i: Int) -> MemoryRegionLayout {
            MemoryRegionLayout(guestAddress: GuestAddress(r.chance(4, in: 5) ? UInt64(i) * regionSize : r.next()), size: size(),
                               frontendAddress: FrontendAddress(regionBase + UInt64(i) * regionSize),
                               mmapOffset: r.chance(9, in: 10) ? 0 : r.pick([4096, UInt64(1) << 62, r.next()]))
        }
        func address(_ bytes: UInt64) -> FrontendAddress {
            FrontendAddress(r.chance(4, in: 5) ? regionBase + UInt64.random(in: 0..<(regionSize - min(bytes, regionSize)), using: &r) & ~15
                                              : r.pick([0, regionBase + regionSize - 8, UInt64.max - 8, r.next()]))
        }
        let queue = r.chance(9, in: 10) ? UInt32.random(in: 0..<UInt32(VhostUserHarness.queueCount), using: &r) : r.pick([2, 255, UInt32.max])
        switch UInt64.random(in: 0..<22, using: &r) {
        case 0: return (.getFeatures, 0)
        case 1:
            let offered = BackendSession.transportFeatures.rawValue | (1 << 9) | (1 << 12)
            return (.setFeatures(r.chance(4, in: 5) ? offered & r.next() : r.next()), 0)
        case 2: return (.setProtocolFeatures(r.chance(4, in: 5) ? BackendSession.offeredProtocolFeatures.rawValue & r.next() : r.next()), 0)
        case 3: return (.setOwner, 0)
        case 4: return (r.chance(1, in: 2) ? .resetOwner : .resetDevice, 0)
        case 5:
            let count = r.chance(9, in: 10) ? Int.random(in: 1...2, using: &r) : Int.random(in: 0...8, using: &r)
            return (.setMemTable((0..<count).map(region)), r.chance(9, in: 10) ? count : Int.random(in: 0...9, using: &r))
        case 6: return (.addMemReg(region(Int.random(in: 0...3, using: &r))), r.chance(9, in: 10) ? 1 : r.pick([0, 2]))
        case 7: return (.remMemReg(region(Int.random(in: 0...3, using: &r))), 0)
        case 8, 9: return (.setVringNum(VringState(index: queue, num: r.chance(4, in: 5) ? r.pick([16, 64, 256, 1024]) : r.pick([0, 3, 2048, r.next32()]))), 0)
        case 10: return (.setVringBase(VringState(index: queue, num: r.next32())), 0)
        case 11, 12:
            return (.setVringAddr(VringAddress(index: queue, flags: r.chance(9, in: 10) ? 0 : r.next32(), descriptorTable: address(16 * 1024),
                                               usedRing: address(6 + 8 * 1024), availRing: address(6 + 2 * 1024),
                                               logGuestAddress: GuestAddress(r.next()))), 0)
        case 13, 14:
            let hasFD = r.chance(3, in: 4)
            return (.setVringKick(VringDescriptorPayload(index: queue & 0xff, hasFileDescriptor: hasFD)), hasFD ? 1 : r.pick([0, 2]))
        case 15:
            let hasFD = r.chance(3, in: 4)
            let payload = VringDescriptorPayload(index: queue & 0xff, hasFileDescriptor: hasFD)
            return (r.chance(1, in: 2) ? .setVringCall(payload) : .setVringErr(payload), hasFD ? r.pick([1, 1, 0]) : 0)
        case 16: return (.setVringEnable(VringState(index: queue, num: r.chance(9, in: 10) ? UInt32.random(in: 0...1, using: &r) : r.next32())), 0)
        case 17: return (.getVringBase(VringState(index: queue, num: 0)), 0)
        case 18:
            let offset = r.chance(4, in: 5) ? UInt32.random(in: 0...60, using: &r) : r.next32()
            let size = UInt32.random(in: 0...r.pick([8, 60, 256]), using: &r)
            let access = ConfigAccess(offset: offset, size: size, flags: r.chance(4, in: 5) ? 0 : r.next32(), bytes: r.bytes(Int(size)))
            return (r.chance(1, in: 2) ? .getConfig(access) : .setConfig(access), 0)
        case 19:
            let area = InflightArea(mmapSize: r.chance(1, in: 2) ? 1 << 16 : r.next(), mmapOffset: r.chance(4, in: 5) ? 0 : r.next(),
                                    queueCount: r.chance(9, in: 10) ? UInt16.random(in: 1...2, using: &r) : r.pick([0, 3, UInt16.max]),
                                    queueSize: r.chance(9, in: 10) ? r.pick([64, 256, 1024]) : r.pick([0, 2048, UInt16.max]))
            return (r.chance(1, in: 2) ? .getInflightFD(area) : .setInflightFD(area), r.pick([0, 1, 1]))
        case 20: return (.setLogBase(LogArea(mmapSize: r.pick([0, 4096, 1 << 20, r.next()]), mmapOffset: r.chance(4, in: 5) ? 0 : r.next())), r.pick([0, 1]))
        default: return (r.pick([.getQueueNum, .getMaxMemSlots, .getProtocolFeatures, .setLogFD, .setBackendReqFD, .getStatus, .setStatus(1),
                                 .unsupported(.getQueueNum)]), r.pick([0, 0, 1]))
        }
    }

    @Test("random vhost-user message sequences through codec + BackendSession: typed errors, consistent rings, rings do start")
    func vhostUserSequences() throws {
        var (r, hint) = Self.random(0xf022_0006)
        let harness = try VhostUserHarness()
        for iteration in 0..<Self.iterations {
            let (message, fdCount) = Self.vhostMessage(&r)
            var bytes = MessageCodec.encode(message, needReply: r.chance(1, in: 4))
            if r.chance(1, in: 40) {  // rare: most of these end the session, and sessions must live long enough to start rings
                // Wrong sizes, request codes, flags: the header passes or fails validation, the
                // payload decodes or not, the stream stays framed by the header's size.
                switch UInt64.random(in: 0..<4, using: &r) {
                case 0: bytes[0] = UInt8.random(in: 0...60, using: &r)
                case 1: bytes[4] = r.pick([0, 2, 5, 0x0d, 0xff])
                case 2: Self.mutate(&bytes, &r)
                default: bytes += r.bytes(Int.random(in: 1...16, using: &r))
                }
                if bytes.count >= MessageHeader.sizeBytes, r.chance(1, in: 2) {
                    let size = UInt32(bytes.count - MessageHeader.sizeBytes)
                    withUnsafeBytes(of: size.littleEndian) { bytes.replaceSubrange(8..<12, with: $0) }
                }
            }
            // Sometimes the message arrives in two receives (fds with the first).
            let cut = r.chance(1, in: 8) ? Int.random(in: 0...bytes.count, using: &r) : bytes.count
            do {
                if let violation = try harness.feed(Array(bytes[..<cut]), fdCount: fdCount)
                    ?? harness.feed(Array(bytes[cut...]), fdCount: 0) {
                    Issue.record("iteration \(iteration): \(message): \(violation); \(hint)")
                    return
                }
            } catch {
                Issue.record("iteration \(iteration): passing fds failed: \(error); \(hint)")
                return
            }
        }
        if Self.iterations >= 1000 {
            #expect(harness.ringsStarted > 0, "no ring ever started: the sequences stay shallow; \(hint)")
            #expect(harness.sessions > 1, "no error ever disconnected; \(hint)")
            for kind in ["invalidRequest", "badPayloadSize", "unsupportedRequest", "badHeader"] {
                #expect(harness.errors[kind, default: 0] > 0, "never \(kind): \(harness.errors); \(hint)")
            }
        }
    }
}

extension SeededRandom {
    mutating func next32() -> UInt32 { UInt32(truncatingIfNeeded: next()) }
}
