import Dispatch
import LinuxSystem
import MemoryServer
import MemxTesting
import RemoteMem
import Synchronization
import Testing

/// De-duplication in memx-server's store (docs/DEDUP.md): share counts through write,
/// overwrite, trim and delete; hash collisions forced with a deliberately weak hash; clones;
/// the per-volume policy; the numbers; the wire opcodes. Every test ends with the store's
/// audit (share counts recomputed from the volumes' page maps).
@Suite("De-duplication: the store")
struct DedupStoreTests {
    /// A store of `frames` frames with one open volume per name (handle, epoch).
    final class Rig {
        let store: VolumeStore
        var volumes: [String: (handle: UInt32, epoch: UInt64)] = [:]

        init(frames: Int = 256, hasher: PageHasher = .random()) throws {
            store = try VolumeStore(arena: try PageArena(capacityBytes: UInt64(frames * 4096)), hasher: hasher)
        }

        func create(_ name: String, pages: UInt64 = 64, deduplicate: Bool = true) throws {
            try store.create(name: name, sizeBytes: pages * 4096, deduplicate: deduplicate)
            try open(name)
        }

        func open(_ name: String) throws {
            let opened = try store.open(name: name, minimumEpoch: 0)
            volumes[name] = (opened.handle, opened.epoch)
        }

        func write(_ name: String, page: UInt64, _ data: [UInt8]) throws(WireStatus) {
            let volume = volumes[name]!
            let outcome = data.withUnsafeBytes { bytes in
                Result { () throws(WireStatus) in
                    try store.write(handle: volume.handle, epoch: volume.epoch, page: page, pageCount: UInt32(data.count / 4096),
                                    from: bytes)
                }
            }
            try outcome.get()
        }

        func read(_ name: String, page: UInt64, count: Int) throws(WireStatus) -> [UInt8] {
            let volume = volumes[name]!
            var data = [UInt8](repeating: 0xEE, count: count * 4096)
            let outcome = data.withUnsafeMutableBytes { bytes in
                Result { () throws(WireStatus) in
                    try store.read(handle: volume.handle, epoch: volume.epoch, page: page, pageCount: UInt32(count), into: bytes)
                }
            }
            try outcome.get()
            return data
        }

        func trim(_ name: String, page: UInt64, count: UInt32) throws(WireStatus) {
            let volume = volumes[name]!
            try store.trim(handle: volume.handle, epoch: volume.epoch, page: page, pageCount: count)
        }

        var used: Int { store.arena.usedFrames }

        func audit(_ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(store.auditSharing() == nil, comment, sourceLocation: sourceLocation)
        }
    }

    /// One 4 KiB page filled from `seed` (distinct seeds, distinct pages).
    static func page(_ seed: Int) -> [UInt8] {
        var random = SeededRandom(seed: UInt64(seed) &* 0x9E37_79B9 &+ 11)
        return random.bytes(4096)
    }

    static func pages(_ seeds: [Int]) -> [UInt8] { seeds.flatMap { page($0) } }

    @Test("share counts: identical pages of two volumes take one frame; overwrite, trim and delete let go of it")
    func shareCounts() throws {
        let rig = try Rig()
        try rig.create("a")
        try rig.create("b")
        try rig.write("a", page: 0, Self.pages([1, 2, 3, 4]))
        #expect(rig.used == 4)
        try rig.write("b", page: 0, Self.pages([1, 2, 3, 4]))
        #expect(rig.used == 4, "b's pages share a's frames")
        // The same content twice inside one request, and a page equal to another of the same volume.
        try rig.write("b", page: 10, Self.pages([5, 5, 1]))
        #expect(rig.used == 5)
        var stats = rig.store.dedupStatistics()
        #expect(stats.logicalPages == 11 && stats.storedFrames == 5 && stats.sharedFrames == 5 && stats.indexedFrames == 5)
        #expect(stats.savedFrames == 6)
        rig.audit()
        // Overwrite a shared page of a: copy-on-write, b keeps the old bytes.
        try rig.write("a", page: 1, Self.page(9))
        #expect(rig.used == 6)
        #expect(try rig.read("a", page: 0, count: 4) == Self.pages([1, 9, 3, 4]))
        #expect(try rig.read("b", page: 0, count: 4) == Self.pages([1, 2, 3, 4]))
        #expect(rig.store.dedupCounters.copiesOnWrite == 1)
        rig.audit()
        // Overwrite a's exclusive page (9) with content b has (2): the frame of 9 is freed.
        try rig.write("a", page: 1, Self.page(2))
        #expect(rig.used == 5)
        rig.audit()
        // Trim: a's pages let go; frames b still uses stay.
        try rig.trim("a", page: 0, count: 4)
        #expect(rig.used == 5)
        #expect(try rig.read("b", page: 0, count: 4) == Self.pages([1, 2, 3, 4]))
        #expect(try rig.read("a", page: 0, count: 1) == [UInt8](repeating: 0, count: 4096))
        rig.audit()
        // b's page 12 and page 0 hold the same content (1): trimming one keeps the other.
        try rig.trim("b", page: 12, count: 1)
        #expect(rig.used == 5)
        #expect(try rig.read("b", page: 0, count: 1) == Self.page(1))
        rig.audit()
        // Delete b: every frame goes back.
        try rig.store.delete(name: "b")
        #expect(rig.used == 0)
        stats = rig.store.dedupStatistics()
        #expect(stats.logicalPages == 0 && stats.indexedFrames == 0 && stats.sharedFrames == 0)
        rig.audit()
    }

    @Test("a full server: duplicate content needs no frame; overwriting unshared pages reuses theirs; a shared page's new content needs one")
    func fullServer() throws {
        let rig = try Rig(frames: 4)
        try rig.create("a")
        try rig.create("b")
        try rig.write("a", page: 0, Self.pages([1, 2, 3, 4]))
        #expect(rig.used == 4)
        try rig.write("b", page: 0, Self.pages([4, 3, 2, 1, 1, 2]))  // all stored already
        #expect(throws: WireStatus.full) { try rig.write("b", page: 8, Self.page(5)) }
        // a's page 0 (content 1) is shared with b: new content there needs a frame: FULL, nothing applied.
        #expect(throws: WireStatus.full) { try rig.write("a", page: 0, Self.pages([6])) }
        #expect(try rig.read("a", page: 0, count: 4) == Self.pages([1, 2, 3, 4]))
        // Free a frame: b lets go of content 4 and a of content 4 → its frame is freed.
        try rig.trim("b", page: 0, count: 1)
        try rig.write("a", page: 3, Self.page(7))  // a's page 3 held 4, now unshared: reused in place
        #expect(rig.used == 4)
        #expect(try rig.read("a", page: 0, count: 4) == Self.pages([1, 2, 3, 7]))
        #expect(try rig.read("b", page: 0, count: 6) == [UInt8](repeating: 0, count: 4096) + Self.pages([3, 2, 1, 1, 2]))
        rig.audit()
        // A request whose new contents all fit only because its own overwrites free frames.
        try rig.trim("b", page: 0, count: 6)
        try rig.write("a", page: 0, Self.pages([10, 11, 12, 13]))
        #expect(rig.used == 4)
        #expect(try rig.read("a", page: 0, count: 4) == Self.pages([10, 11, 12, 13]))
        rig.audit()
    }

    @Test("crafted collisions (every page hashes alike): the byte compare keeps every page's own bytes; duplicates still share")
    func craftedCollisions() throws {
        for bits in [0, 2] {
            let rig = try Rig(frames: 512, hasher: .truncated(toBits: bits))
            try rig.create("a", pages: 256)
            try rig.create("b", pages: 256)
            // Pages that differ in one byte only: the nastiest neighbours for a compare.
            var base = Self.page(1)
            var contents: [[UInt8]] = []
            for i in 0..<40 {
                base[i * 97 % 4096] ^= UInt8(1 + i % 255)
                contents.append(base)
            }
            for (i, content) in contents.enumerated() { try rig.write("a", page: UInt64(i), content) }
            for (i, content) in contents.enumerated() {
                #expect(try rig.read("a", page: UInt64(i), count: 1) == content, "page \(i) with \(bits)-bit hashes")
            }
            #expect(rig.used == 40)
            #expect(rig.store.dedupCounters.hashCollisions > 0)
            // b writes the last few (within the compare limit of the newest frames): they share.
            for i in 36..<40 { try rig.write("b", page: UInt64(i), contents[i]) }
            #expect(rig.used == 40, "duplicates found among colliding candidates")
            for i in 36..<40 { #expect(try rig.read("b", page: UInt64(i), count: 1) == contents[i]) }
            // Any other colliding content never reads as another page's bytes.
            try rig.write("b", page: 100, Self.page(77))
            #expect(try rig.read("b", page: 100, count: 1) == Self.page(77))
            rig.audit("with \(bits)-bit hashes")
            try rig.store.delete(name: "a")
            try rig.store.delete(name: "b")
            #expect(rig.used == 0)
            rig.audit()
        }
    }

    @Test("clones share every page until written, then diverge both ways; delete of the template keeps the clone")
    func clones() throws {
        let rig = try Rig()
        try rig.create("template", pages: 32)
        let image = Self.pages(Array(0..<16))
        try rig.write("template", page: 0, image)
        let volume = rig.volumes["template"]!
        try rig.store.putMetadata(handle: volume.handle, epoch: volume.epoch, expectedVersion: 0, newVersion: 3, metadata: [1, 2, 3])
        let result = try rig.store.clone(template: "template", name: "vm1", deduplicate: true)
        #expect(result == CloneResult(pages: 16, framesTaken: 0))
        #expect(rig.used == 16)
        let opened = try rig.store.open(name: "vm1", minimumEpoch: 0)
        #expect(opened.metadata == [1, 2, 3] && opened.metadataVersion == 3 && opened.sizeBytes == 32 * 4096)
        rig.volumes["vm1"] = (opened.handle, opened.epoch)
        #expect(try rig.read("vm1", page: 0, count: 16) == image)
        // The clone writes: the template does not see it.
        try rig.write("vm1", page: 3, Self.page(100))
        #expect(try rig.read("template", page: 3, count: 1) == Self.page(3))
        #expect(try rig.read("vm1", page: 3, count: 1) == Self.page(100))
        // The template writes: the clone does not see it.
        try rig.write("template", page: 5, Self.page(101))
        #expect(try rig.read("vm1", page: 5, count: 1) == Self.page(5))
        try rig.trim("vm1", page: 0, count: 2)
        #expect(try rig.read("template", page: 0, count: 2) == Self.pages([0, 1]))
        #expect(rig.used == 18)
        rig.audit()
        // A second clone of the clone, then the template goes: the clones keep their pages.
        _ = try rig.store.clone(template: "vm1", name: "vm2", deduplicate: true)
        try rig.store.delete(name: "template")
        try rig.open("vm2")
        #expect(try rig.read("vm2", page: 2, count: 14) == Self.pages([2, 100, 4, 5] + Array(6..<16)))
        #expect(rig.used == 14, "the template's own frames (0, 1, 3, 101) are freed")
        rig.audit()
        // Errors: no template, a taken name, a clone of itself, bad names.
        #expect(throws: WireStatus.notFound) { _ = try rig.store.clone(template: "gone", name: "x", deduplicate: true) }
        #expect(throws: WireStatus.exists) { _ = try rig.store.clone(template: "vm1", name: "vm2", deduplicate: true) }
        #expect(throws: WireStatus.invalid) { _ = try rig.store.clone(template: "vm1", name: "vm1", deduplicate: true) }
        #expect(throws: WireStatus.invalid) { _ = try rig.store.clone(template: "vm1", name: ".x", deduplicate: true) }
        rig.audit()
    }

    @Test("de-duplication off per volume: its pages share no frame, with each other or anyone; clones to or from it copy")
    func policyOff() throws {
        let rig = try Rig(frames: 64)
        try rig.create("shared")
        try rig.create("private", deduplicate: false)
        try rig.write("shared", page: 0, Self.pages([1, 2]))
        try rig.write("private", page: 0, Self.pages([1, 2, 1]))
        #expect(rig.used == 5, "2 shared + 3 private")
        let stats = rig.store.dedupStatistics()
        #expect(stats.privatePages == 3 && stats.logicalPages == 5 && stats.savedFrames == 0)
        #expect(try rig.store.volumeDedupStatistics(name: "private")
                == VolumeDedupStatistics(flags: DedupMessages.volumeFlagNoDedup, logicalPages: 3, sharedPages: 0, chargedBytes: 3 * 4096))
        // Overwrites of private pages stay in place.
        try rig.write("private", page: 1, Self.page(3))
        #expect(rig.used == 5)
        rig.audit()
        // A private clone of a shared template copies; a shared clone of a private one is indexed.
        #expect(try rig.store.clone(template: "shared", name: "copy", deduplicate: false) == CloneResult(pages: 2, framesTaken: 2))
        #expect(rig.used == 7)
        #expect(try rig.store.clone(template: "private", name: "indexed", deduplicate: true) == CloneResult(pages: 3, framesTaken: 1))
        #expect(rig.used == 8, "contents 1 (shared) and 3 (new); 1 twice is one frame")
        try rig.open("copy")
        try rig.open("indexed")
        #expect(try rig.read("copy", page: 0, count: 2) == Self.pages([1, 2]))
        #expect(try rig.read("indexed", page: 0, count: 3) == Self.pages([1, 3, 1]))
        rig.audit()
        // A copy that does not fit is refused whole.
        let small = try Rig(frames: 3)
        try small.create("t", deduplicate: false)
        try small.write("t", page: 0, Self.pages([1, 2]))
        #expect(throws: WireStatus.full) { _ = try small.store.clone(template: "t", name: "c", deduplicate: false) }
        #expect(throws: WireStatus.full) { _ = try small.store.clone(template: "t", name: "c", deduplicate: true) }
        #expect(small.used == 2)
        #expect(small.store.list().map(\.name) == ["t"])
        small.audit()
    }

    @Test("numbers: the server's logical pages, frames and saving; each volume's shared pages and fair share add up to the memory used")
    func statistics() throws {
        let rig = try Rig()
        try rig.create("a")
        try rig.create("b")
        try rig.create("c")
        try rig.write("a", page: 0, Self.pages([1, 2, 3, 4]))
        try rig.write("b", page: 0, Self.pages([1, 2, 3, 5]))
        try rig.write("c", page: 0, Self.pages([1, 1, 6]))
        let stats = rig.store.dedupStatistics()
        #expect(stats.logicalPages == 11 && stats.storedFrames == 6 && stats.indexedFrames == 6 && stats.sharedFrames == 3)
        #expect(abs(stats.savingPercent - 500.0 / 11) < 1e-9)
        #expect(stats.pagesHashed == 11 && stats.duplicatePages == 5 && stats.hashAlgorithm == DedupMessages.hashMX128)
        let perVolume = try ["a", "b", "c"].map { try rig.store.volumeDedupStatistics(name: $0) }
        #expect(perVolume.map(\.sharedPages) == [3, 3, 2])
        #expect(perVolume.map(\.logicalPages) == [4, 4, 3])
        // Content 1 has 4 pages (1 KiB each), 2 and 3 have 2 (2 KiB each), 4, 5, 6 one each.
        let expectedCharges: [UInt64] = [9216, 9216, 6144]  // 1 KiB + 2 + 2 + 4; the same; 1 + 1 + 4
        #expect(perVolume.map(\.chargedBytes) == expectedCharges)
        #expect(perVolume.map(\.chargedBytes).reduce(0, +) == UInt64(rig.used * 4096))
        #expect(throws: WireStatus.notFound) { _ = try rig.store.volumeDedupStatistics(name: "nope") }
    }

    @Test("4 threads write the same contents into their own volumes at once (and trim, and overwrite): every page verifies, counts agree")
    func concurrentWriters() throws {
        let rig = try Rig(frames: 4096)
        let names = (0..<4).map { "v\($0)" }
        for name in names { try rig.create(name, pages: 512) }
        let contents = (0..<64).map { Self.page($0) }
        let failures = Atomic<Int>(0)
        let store = rig.store
        let volumes = rig.volumes
        DispatchQueue.concurrentPerform(iterations: names.count) { t in
            let volume = volumes[names[t]]!
            var random = SeededRandom(seed: UInt64(t + 1))
            for _ in 0..<400 {
                let page = UInt64.random(in: 0..<500, using: &random)
                let count = Int.random(in: 1...8, using: &random)
                let data = (0..<count).flatMap { i in contents[Int(page + UInt64(i)) % 64] }
                let outcome = data.withUnsafeBytes { bytes in
                    Result { () throws(WireStatus) in
                        if random.chance(1, in: 8) {
                            try store.trim(handle: volume.handle, epoch: volume.epoch, page: page, pageCount: UInt32(count))
                        } else {
                            try store.write(handle: volume.handle, epoch: volume.epoch, page: page, pageCount: UInt32(count), from: bytes)
                        }
                    }
                }
                if case .failure = outcome { failures.wrappingAdd(1, ordering: .relaxed) }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        rig.audit()
        #expect(rig.used <= 64, "every page holds one of 64 contents")
        for name in names {
            let data = try rig.read(name, page: 0, count: 32)
            for i in 0..<32 {
                let page = Array(data[(i * 4096)..<((i + 1) * 4096)])
                #expect(page == contents[i % 64] || page.allSatisfy { $0 == 0 }, "\(name) page \(i)")
            }
        }
    }
}

/// MX128, the page hash, and the wire opcodes of de-duplication against a real server.
@Suite("De-duplication: the hash and the wire")
struct DedupWireTests {
    @Test("MX128: every single-bit flip of a page changes its hash, all 32768 differ from each other; seeds matter; truncation keeps bits")
    func hashSensitivity() {
        let hasher = PageHasher(seed: 42)
        var page = DedupStoreTests.page(1)
        func hash(_ bytes: [UInt8]) -> PageHash { bytes.withUnsafeBytes { hasher.hash($0.baseAddress!) } }
        let original = hash(page)
        var seen = Set<PageHash>([original])
        var lowHalves = Set<UInt64>([original.low])
        for bit in 0..<(4096 * 8) {
            page[bit / 8] ^= 1 << UInt8(bit % 8)
            let flipped = hash(page)
            seen.insert(flipped)
            lowHalves.insert(flipped.low)
            page[bit / 8] ^= 1 << UInt8(bit % 8)
        }
        #expect(seen.count == 4096 * 8 + 1)
        #expect(lowHalves.count == 4096 * 8 + 1, "each 64-bit half alone tells them apart too")
        #expect(hash(page) == original, "deterministic")
        // Swapping two 64-byte blocks changes the hash (the lanes are order-sensitive).
        var swapped = page
        swapped.replaceSubrange(0..<64, with: page[64..<128])
        swapped.replaceSubrange(64..<128, with: page[0..<64])
        #expect(hash(swapped) != original)
        let other = DedupStoreTests.page(1).withUnsafeBytes { PageHasher(seed: 43).hash($0.baseAddress!) }
        #expect(other != original, "another server's key, another hash")
        let zeros = [UInt8](repeating: 0, count: 4096)
        #expect(zeros.withUnsafeBytes { PageHasher.truncated(toBits: 0).hash($0.baseAddress!) } == PageHash(low: 0, high: 0))
        let three = page.withUnsafeBytes { PageHasher.truncated(toBits: 3).hash($0.baseAddress!) }
        #expect(three.high == 0 && three.low < 8)
    }

    @Test("wire: HELLO says DEDUP; VOLUME_CREATE flags (NO_DEDUP, unknown bits INVALID, a short field closes); VOLUME_CLONE and the stats over TCP")
    func wire() throws {
        let host = try InProcessServer()
        let client = try host.client()
        #expect(((client.control.hello?.flags ?? 0) & DedupMessages.helloFlagDedup) != 0)
        func create(_ name: String, flags: UInt32?) throws -> WireStatus? {
            var writer = PayloadWriter()
            writer.u64(16 * 4096)
            writer.name(name)
            if let flags { writer.u32(flags) }
            return try client.call(.volumeCreate, payload: writer.bytes).header.statusValue
        }
        #expect(try create("plain", flags: nil) == .ok)
        #expect(try create("zero", flags: 0) == .ok)
        #expect(try create("private", flags: DedupMessages.volumeFlagNoDedup) == .ok)
        #expect(try create("odd", flags: 2) == .invalid)
        let page = DedupStoreTests.page(5)
        for name in ["plain", "zero", "private"] {
            let volume = try client.open(name)
            #expect(try client.write(volume.handle, epoch: volume.epoch, page: 0, page + page) == .ok)
        }
        #expect(try client.serverStat().usedFrames == 3, "one shared frame, two private ones")
        let stat = try DedupStatistics(try client.call(.dedupStat).payload)
        #expect(stat.logicalPages == 6 && stat.storedFrames == 3 && stat.privatePages == 2 && stat.sharedFrames == 1)
        let privateStat = try VolumeDedupStatistics(try client.named(.volumeDedupStat, "private").payload)
        #expect(!privateStat.deduplicates && privateStat.logicalPages == 2)
        let plainStat = try VolumeDedupStatistics(try client.named(.volumeDedupStat, "plain").payload)
        #expect(plainStat.deduplicates && plainStat.sharedPages == 2 && plainStat.chargedBytes == 2048)
        #expect(try client.named(.volumeDedupStat, "nothing").header.statusValue == .notFound)
        // VOLUME_CLONE: shares, refuses, and answers what it did.
        let cloned = try client.call(.volumeClone, payload: DedupMessages.volumeClone(template: "plain", name: "vm", flags: 0))
        #expect(cloned.header.statusValue == .ok)
        #expect(try CloneResult(cloned.payload) == CloneResult(pages: 2, framesTaken: 0))
        #expect(try client.call(.volumeClone, payload: DedupMessages.volumeClone(template: "plain", name: "vm", flags: 0)).header.statusValue == .exists)
        #expect(try client.call(.volumeClone, payload: DedupMessages.volumeClone(template: "none", name: "x", flags: 0)).header.statusValue == .notFound)
        #expect(try client.call(.volumeClone, payload: DedupMessages.volumeClone(template: "plain", name: "y", flags: 4)).header.statusValue == .invalid)
        #expect(try client.serverStat().usedFrames == 3)
        #expect(try client.stat("vm").storedPages == 2)
        // A malformed flags field (2 bytes, not 4) is a broken peer: the connection closes.
        var writer = PayloadWriter()
        writer.u64(4096)
        writer.name("short")
        writer.u16(1)
        try client.send(FrameHeader(opcode: .volumeCreate, requestID: client.makeID()), payload: writer.bytes)
        #expect(client.isClosedByServer())
    }
}

extension DedupWireTests {
    @Test("metrics: logical and saved bytes, shared frames and the totals")
    func metrics() throws {
        let host = try InProcessServer(memoryBytes: 1 << 20)
        let client = try host.client()
        for name in ["m1", "m2"] {
            #expect(try client.create(name, sizeBytes: 64 * 4096) == .ok)
            let volume = try client.open(name)
            #expect(try client.write(volume.handle, epoch: volume.epoch, page: 0, DedupStoreTests.pages([1, 2, 3, 1])) == .ok)
        }
        let text = MetricsResponder.exposition(host.server)
        #expect(text.contains("\nmemx_server_used_bytes 12288\n"))
        #expect(text.contains("\nmemx_server_logical_bytes 32768\n"))
        #expect(text.contains("\nmemx_server_dedup_saved_bytes 20480\n"))
        #expect(text.contains("\nmemx_server_dedup_shared_frames 3\n"))
        #expect(text.contains("\nmemx_server_dedup_duplicate_pages_total 5\n"))
        #expect(text.contains("\nmemx_server_dedup_pages_hashed_total 8\n"))
        #expect(text.contains("\nmemx_server_dedup_hash_collisions_total 0\n"))
    }
}
