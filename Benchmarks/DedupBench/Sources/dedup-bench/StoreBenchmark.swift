import Glibc
import MemoryServer
import RemoteMem

/// The store's write path in process (no network): 4 KiB WRITEs to random pages of a 64 MiB
/// volume that is already written, with de-duplication off, on with new content every write,
/// and on with content another volume holds already. Median and mean per write.
struct StoreBenchmark {
    let writes: Int
    static let volumePages = 16_384

    func run() {
        print("| write of 4 KiB | p50 ns | mean ns |")
        print("|---|---:|---:|")
        for (label, deduplicate, duplicate) in [("de-duplication off", false, false),
                                                ("on, new content", true, false),
                                                ("on, content stored already", true, true)] {
            let (p50, mean) = measure(deduplicate: deduplicate, duplicate: duplicate)
            print("| \(label) | \(p50) | \(mean) |")
        }
    }

    private func measure(deduplicate: Bool, duplicate: Bool) -> (UInt64, UInt64) {
        do {
            let store = try VolumeStore(arena: try PageArena(capacityBytes: UInt64(3 * Self.volumePages * 4096)))
            let size = UInt64(Self.volumePages * 4096)
            try store.create(name: "source", sizeBytes: size, deduplicate: true)
            try store.create(name: "target", sizeBytes: size, deduplicate: deduplicate)
            let source = try store.open(name: "source", minimumEpoch: 0)
            let target = try store.open(name: "target", minimumEpoch: 0)
            let data = randomBytes(Self.volumePages * 4096, seed: 3)
            defer { data.deallocate() }
            for page in stride(from: 0, to: Self.volumePages, by: 32) {
                let chunk = UnsafeRawBufferPointer(rebasing: data[(page * 4096)..<((page + 32) * 4096)])
                try store.write(handle: source.handle, epoch: source.epoch, page: UInt64(page), pageCount: 32, from: chunk)
            }
            // The target starts written with other content (each page its own).
            let other = randomBytes(Self.volumePages * 4096, seed: 4)
            defer { other.deallocate() }
            for page in stride(from: 0, to: Self.volumePages, by: 32) {
                let chunk = UnsafeRawBufferPointer(rebasing: other[(page * 4096)..<((page + 32) * 4096)])
                try store.write(handle: target.handle, epoch: target.epoch, page: UInt64(page), pageCount: 32, from: chunk)
            }
            var samples = [UInt64](repeating: 0, count: writes)
            var state: UInt64 = 0x9e37_79b9
            let fresh = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 4096)
            defer { fresh.deallocate() }
            for i in 0..<writes {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                let page = Int(state >> 33) % Self.volumePages
                let content: UnsafeRawBufferPointer
                if duplicate {
                    content = UnsafeRawBufferPointer(rebasing: data[(page * 4096)..<((page + 1) * 4096)])
                } else {
                    // New content every time: a counter in the first 8 bytes of random data.
                    fresh.copyMemory(from: UnsafeRawBufferPointer(rebasing: other[(page * 4096)..<((page + 1) * 4096)]))
                    fresh.storeBytes(of: UInt64(i) &+ 0xabc0_0000_0000, toByteOffset: 0, as: UInt64.self)
                    content = UnsafeRawBufferPointer(fresh)
                }
                let start = nowNanos()
                try store.write(handle: target.handle, epoch: target.epoch, page: UInt64(page), pageCount: 1, from: content)
                samples[i] = nowNanos() - start
            }
            samples.sort()
            return (samples[writes / 2], samples.reduce(0, +) / UInt64(writes))
        } catch {
            printError("dedup-bench: store: \(error)")
            exit(1)
        }
    }
}
