import CDedupBench
import Glibc
import MemoryServer

/// Throughput of the page-hash candidates over `megabytes` of distinct random pages (larger
/// than the caches, as a server's incoming writes are), best of 5 rounds each, with the byte
/// compare and the copy every write does anyway as yardsticks.
struct HashBenchmark {
    let megabytes: Int

    func run() {
        let bytes = megabytes << 20
        let pages = bytes / 4096
        let data = randomBytes(bytes, seed: 7)
        let copy = randomBytes(bytes, seed: 7)
        defer { data.deallocate(); copy.deallocate() }
        let base = UnsafeRawPointer(data.baseAddress!)
        var sink: UInt64 = 0
        let hasher = PageHasher(seed: 42)
        var digest = [UInt8](repeating: 0, count: 32)
        let candidates: [(String, () -> Void)] = [
            ("MX128 (memx-server)", { for p in 0..<pages { sink ^= hasher.hash(base + p * 4096).low } }),
            ("SHA-256 (libcrypto EVP)", {
                for p in 0..<pages { _ = dedup_bench_sha256(base + p * 4096, 4096, &digest); sink ^= UInt64(digest[0]) }
            }),
            ("memcmp (the confirming compare)", {
                for p in 0..<pages { sink &+= UInt64(bitPattern: Int64(memcmp(base + p * 4096, copy.baseAddress! + p * 4096, 4096))) }
            }),
            ("memcpy (storing the page)", {
                for p in 0..<pages { memcpy(copy.baseAddress! + p * 4096, base + p * 4096, 4096) }
            }),
        ]
        print("| function | GB/s | ns per 4 KiB page |")
        print("|---|---:|---:|")
        for (name, body) in candidates {
            var best = UInt64.max
            for _ in 0..<5 {
                let start = nowNanos()
                body()
                best = min(best, nowNanos() - start)
            }
            let gbPerSecond = Double(bytes) / Double(best)
            let perPage = Double(best) / Double(pages)
            print("| \(name) | \(fixed(gbPerSecond, 2)) | \(fixed(perPage, 0)) |")
        }
        if sink == 42 { print("") }  // keep the work
    }
}
