import Foundation
import LinuxSystem
import MemxTesting
import RemoteMem
import Testing
import VhostUser

/// De-duplication end to end: real memx-vhost and memx-server processes, memxctl's clones,
/// policy and numbers, and the content-aligned placement that lets identical images meet on
/// the same servers.
@Suite("De-duplication: memx-vhost, memxctl and placement on real servers", .serialized)
struct DedupPoolTests {
    /// A guest-image-like byte string: seeded data, runs of zero blocks, and some blocks that
    /// repeat inside the image (as files and metadata do).
    static func image(bytes: Int) -> [UInt8] {
        var random = SeededRandom(seed: 0xd1a9e)
        var data = [UInt8]()
        data.reserveCapacity(bytes)
        let repeated = random.bytes(4096)
        for block in 0..<(bytes / 4096) {
            switch block % 16 {
            case 3, 4: data += [UInt8](repeating: 0, count: 4096)
            case 9: data += repeated
            default: data += random.bytes(4096)
            }
        }
        return data
    }

    static func distinctBlocks(_ data: [UInt8]) -> Int {
        Set(stride(from: 0, to: data.count, by: 4096).map { data[$0..<($0 + 4096)] }).count
    }

    static func dedupStat(_ pool: ServerPool) throws -> DedupStatistics {
        var total: [DedupStatistics] = []
        for address in pool.addresses { total.append(try ControlClient(connectingTo: address).dedupStat()) }
        return total.reduce(into: DedupStatistics(hashAlgorithm: 1, logicalPages: 0, storedFrames: 0, indexedFrames: 0, sharedFrames: 0,
                                                  privatePages: 0, pagesHashed: 0, duplicatePages: 0, hashCollisions: 0,
                                                  copiesOnWrite: 0, clonedPages: 0)) { sum, stat in
            sum.logicalPages += stat.logicalPages
            sum.storedFrames += stat.storedFrames
            sum.hashCollisions += stat.hashCollisions
            sum.copiesOnWrite += stat.copiesOnWrite
        }
    }

    /// Writes `data` from sector 0 through memx-vhost in 128 KiB requests, flushes, reads every
    /// chunk back.
    static func writeAndVerify(_ backend: Backend, _ data: [UInt8]) throws {
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.descriptorLayout = .indirect
        options.dataBytesPerSlot = 128 << 10
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        let chunk = 128 << 10
        for offset in stride(from: 0, to: data.count, by: chunk) {
            #expect(try queue.write(sector: UInt64(offset / 512), data: Array(data[offset..<(offset + chunk)])).isOK)
        }
        #expect(try queue.perform(.flush).isOK)
        for offset in stride(from: 0, to: data.count, by: chunk) {
            #expect(try queue.read(sector: UInt64(offset / 512), byteCount: chunk).1 == Array(data[offset..<(offset + chunk)]))
        }
        _ = try client.stop()
    }

    /// Reads `count` bytes at `offset` through memx-vhost.
    static func read(_ backend: Backend, offset: Int, count: Int) throws -> [UInt8] {
        let client = try backend.connect()
        var options = BlockQueueOptions()
        options.dataBytesPerSlot = 128 << 10
        let queue = try client.start(queues: 1, queueSize: 128, queueOptions: options)[0]
        var data: [UInt8] = []
        for piece in stride(from: offset, to: offset + count, by: 128 << 10) {
            data += try queue.read(sector: UInt64(piece / 512), byteCount: min(128 << 10, offset + count - piece)).1
        }
        _ = try client.stop()
        return data
    }

    @Test("3 VMs written with one image through memx-vhost on 3 servers (2 replicas): data verifies, the pool stores the image once per replica, a write in one VM changes no other")
    func vmsFromOneImage() throws {
        let pool = try ServerPool("dedup-vms", count: 3)
        let servers = RemoteBackendTests.arguments(pool.servers)
        let image = Self.image(bytes: 12 << 20)  // 3 page groups
        for vm in 0..<3 {
            let backend = try Backend("dedup-vm\(vm)", size: "32M", volume: "vm\(vm)", extra: servers)
            try Self.writeAndVerify(backend, image)
            #expect(try backend.process!.stop() == 0)
        }
        let stat = try Self.dedupStat(pool)
        let imagePages = UInt64(image.count / 4096)
        #expect(stat.logicalPages == 3 * 2 * imagePages, "every VM's image, at 2 replicas")
        // Every distinct block once per replica; the zero block and the repeated one, found in
        // every group, may be on all 3 servers.
        let distinct = UInt64(Self.distinctBlocks(image))
        #expect(stat.storedFrames >= 2 * distinct && stat.storedFrames <= 2 * distinct + 2,
                "pool stores \(stat.storedFrames) frames for \(distinct) distinct pages at 2 replicas")
        #expect(stat.savingPercent > 70, "saving \(stat.savingPercent) %")
        #expect(stat.hashCollisions == 0)

        // vm0 overwrites its first 1 MiB (copy-on-write on every server holding it); vm1 and
        // vm2, read by fresh backends from the servers (a 1 MiB cache), keep the image.
        let changed = Self.image(bytes: 13 << 20).suffix(1 << 20)
        let vm0 = try Backend("dedup-vm0b", size: "32M", volume: "vm0", extra: servers)
        try Self.writeAndVerify(vm0, Array(changed))
        #expect(try vm0.process!.stop() == 0)
        #expect(try Self.dedupStat(pool).copiesOnWrite > 0)
        for vm in 1..<3 {
            let backend = try Backend("dedup-read\(vm)", size: "32M", volume: "vm\(vm)", extra: servers)
            #expect(try Self.read(backend, offset: 0, count: 2 << 20) == Array(image[0..<(2 << 20)]), "vm\(vm)")
            #expect(try backend.process!.stop() == 0)
        }
        let again = try Backend("dedup-vm0c", size: "32M", volume: "vm0", extra: servers)
        #expect(try Self.read(again, offset: 0, count: 2 << 20) == Array(changed) + Array(image[(1 << 20)..<(2 << 20)]))
        #expect(try again.process!.stop() == 0)
    }

    @Test("memxctl: create --from clones (memx-vhost reads the template's data in the clone, writes diverge); --no-dedup; stat, list and dedup, tables and --json")
    func clonesThroughMemxctl() throws {
        let pool = try ServerPool("dedup-ctl", count: 2)
        let flags = pool.addresses.flatMap { ["--server", $0.description] }
        let servers = RemoteBackendTests.arguments(pool.servers)
        let image = Self.image(bytes: 8 << 20)
        let template = try Backend("dedup-template", size: "16M", volume: "golden", extra: servers)
        try Self.writeAndVerify(template, image)
        #expect(try template.process!.stop() == 0)
        let used = try Self.dedupStat(pool).storedFrames

        let created = try MemxctlProcess.run(flags + ["create", "vm1", "--from", "golden"])
        #expect(created.status == 0, "\(created.stderr)")
        #expect(created.stdout.contains("as a clone of 'golden'") && created.stdout.contains("all shared with the template"))
        let json = try MemxctlProcess.run(flags + ["--json", "create", "vm2", "--from", "golden", "--size", "16M"])
        let document = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        #expect(document["from"] as? String == "golden" && document["framesTaken"] as? Int == 0)
        #expect(document["pages"] as? Int == 2 * image.count / 4096, "both replicas' pages")
        #expect(try Self.dedupStat(pool).storedFrames == used, "clones take no memory")

        // The clone reads the template's data through memx-vhost, and its writes stay its own.
        let clone = try Backend("dedup-clone", size: "16M", volume: "vm1", extra: servers)
        #expect(try Self.read(clone, offset: 0, count: 2 << 20) == Array(image[0..<(2 << 20)]))
        let mine = Array(Self.image(bytes: 9 << 20).suffix(1 << 20))
        try Self.writeAndVerify(clone, mine)
        #expect(try clone.process!.stop() == 0)
        let golden = try Backend("dedup-golden", size: "16M", volume: "golden", extra: servers)
        #expect(try Self.read(golden, offset: 0, count: 1 << 20) == Array(image[0..<(1 << 20)]))
        #expect(try golden.process!.stop() == 0)
        let vm2 = try Backend("dedup-vm2", size: "16M", volume: "vm2", extra: servers)
        #expect(try Self.read(vm2, offset: 0, count: 1 << 20) == Array(image[0..<(1 << 20)]))
        #expect(try vm2.process!.stop() == 0)

        // Policy: a volume without de-duplication, and a private copy of the template.
        #expect(try MemxctlProcess.run(flags + ["create", "tenant", "--size", "16M", "--no-dedup"]).status == 0)
        let copy = try MemxctlProcess.run(flags + ["create", "copy", "--from", "golden", "--no-dedup"])
        #expect(copy.status == 0 && copy.stdout.contains("new frame(s)"), "\(copy.stdout)\(copy.stderr)")
        let list = try MemxctlProcess.run(flags + ["list"])
        #expect(list.stdout.contains("DEDUP"))
        #expect(list.stdout.split(separator: "\n").contains { $0.hasPrefix("tenant ") && $0.contains(" off ") })
        let stat = try MemxctlProcess.run(flags + ["stat", "vm2"])
        #expect(stat.stdout.contains("dedup     on: ") && stat.stdout.contains("SHARED"), "\(stat.stdout)")
        let statJSON = try #require(try JSONSerialization.jsonObject(with: Data(try MemxctlProcess.run(flags + ["--json", "stat", "copy"]).stdout.utf8))
                                    as? [String: Any])
        #expect(statJSON["dedup"] as? Bool == false)
        // memx-vhost --no-dedup creates its volume with the same policy.
        let privateVM = try Backend("dedup-private", size: "16M", volume: "private", extra: servers + ["--no-dedup"])
        #expect(try privateVM.process!.stop() == 0)
        let privateJSON = try #require(try JSONSerialization.jsonObject(
            with: Data(try MemxctlProcess.run(flags + ["--json", "stat", "private"]).stdout.utf8)) as? [String: Any])
        #expect(privateJSON["dedup"] as? Bool == false)

        let dedup = try MemxctlProcess.run(flags + ["dedup"])
        #expect(dedup.status == 0 && dedup.stdout.contains("SAVED%") && dedup.stdout.contains("pool"), "\(dedup.stdout)")
        let dedupJSON = try #require(try JSONSerialization.jsonObject(with: Data(try MemxctlProcess.run(flags + ["--json", "dedup"]).stdout.utf8))
                                     as? [String: Any])
        let poolNumbers = try #require(dedupJSON["pool"] as? [String: Any])
        let stats = try Self.dedupStat(pool)
        #expect(poolNumbers["logicalPages"] as? Int == Int(stats.logicalPages) && poolNumbers["storedFrames"] as? Int == Int(stats.storedFrames))
        #expect((poolNumbers["savingPercent"] as? Double ?? 0) > 50)
        #expect((dedupJSON["servers"] as? [[String: Any]])?.count == 2)

        // Bad uses: one line, the right status.
        let exists = try MemxctlProcess.run(flags + ["create", "vm1", "--from", "golden"])
        #expect(exists.status == 1 && exists.stderr.contains("exists"))
        let missing = try MemxctlProcess.run(flags + ["create", "vm9", "--from", "nothing"])
        #expect(missing.status == 1 && missing.stderr.contains("'nothing' is not on"), "\(missing.stderr)")
        let wrongSize = try MemxctlProcess.run(flags + ["create", "vm9", "--from", "golden", "--size", "8M"])
        #expect(wrongSize.status == 2 && wrongSize.stderr.contains("template's size"), "\(wrongSize.stderr)")
        let noSize = try MemxctlProcess.run(flags + ["create", "vm9"])
        #expect(noSize.status == 2 && noSize.stderr.contains("--size is required"), "\(noSize.stderr)")
        let itself = try MemxctlProcess.run(flags + ["create", "vm9", "--from", "vm9"])
        #expect(itself.status == 2, "\(itself.stderr)")
    }

    @Test("placement: the same group of different volumes lands on the same servers, so one image on 3 servers is stored once")
    func contentAlignedPlacement() throws {
        let pool = try ServerPool("dedup-place", count: 3)
        let image = Self.image(bytes: 16 << 20)  // 4 groups
        var placements: [[Int?]] = []
        for vm in 0..<3 {
            let store = try RemotePageStore(servers: pool.addresses, volume: "p\(vm)", capacityBytes: 32 << 20,
                                            options: RemotePageStore.Options(cacheBytes: 1 << 20, writeThrough: true, replicas: 1))
            for offset in stride(from: 0, to: image.count, by: 128 << 10) {
                try store.write(at: UInt64(offset), Array(image[offset..<(offset + (128 << 10))]))
            }
            // Every store connects to the servers in pool order: slot i is server i.
            placements.append((0..<4).map { store.volume.server(ofPage: UInt64($0) * 1024) })
            #expect(store.close() == nil)
        }
        #expect(placements[0] == placements[1] && placements[1] == placements[2], "\(placements)")
        let stat = try Self.dedupStat(pool)
        // Each distinct block once; the zero and the repeated block at most once per server.
        let distinct = UInt64(Self.distinctBlocks(image))
        #expect(stat.storedFrames >= distinct && stat.storedFrames <= distinct + 4, "\(stat.storedFrames) frames, \(distinct) distinct")
        #expect(stat.logicalPages == 3 * UInt64(image.count / 4096))
    }
}
