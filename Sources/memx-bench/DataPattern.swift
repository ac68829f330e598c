/// The bytes memx-bench writes, and expects to read back, for each 4 KiB block of the disk.
///
/// Every block starts with a 16-byte stamp: the block's byte offset on the disk, then a tag
/// made from the seed and a generation number. The rest of the block is filler. Prefill
/// (generation 0) uses one filler for all blocks, so stamping 1 GiB is cheap. Verification
/// (generation 1) uses filler unique to each block. A block that comes back from the wrong
/// place, or stale, is named by its stamp in the mismatch message.
enum DataPattern {
    static let blockBytes = 4096
    static let stampBytes = 16
    /// Generation of the prefill pattern; the region is left holding it after verification.
    static let prefillGeneration: UInt64 = 0
    /// Generation written (and checked) first during verification.
    static let verifyGeneration: UInt64 = 1

    static func tag(seed: UInt64, generation: UInt64) -> UInt64 {
        (seed &* 0x2545_f491_4f6c_dd1d) ^ (generation &+ 0x6d78_6265_6e63_6800)  // "mxbench\0"
    }

    /// The prefill filler for `seed`: 4 KiB of pseudo-random bytes shared by every block.
    static func sharedFiller(seed: UInt64) -> [UInt8] {
        var generator = SeededGenerator(seed: seed, stream: 0xf111)
        return randomBytes(blockBytes, &generator)
    }

    /// Writes block `diskOffset`'s stamp into `buffer` at `index`.
    static func stamp(_ buffer: inout [UInt8], at index: Int, diskOffset: UInt64, tag: UInt64) {
        for i in 0..<8 {
            buffer[index + i] = UInt8(truncatingIfNeeded: diskOffset >> (8 * UInt64(i)))
            buffer[index + 8 + i] = UInt8(truncatingIfNeeded: tag >> (8 * UInt64(i)))
        }
    }

    /// The expected content of `count` bytes (whole blocks) at `diskOffset`.
    static func expected(diskOffset: UInt64, count: Int, seed: UInt64, generation: UInt64, filler: [UInt8]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(count)
        let tag = tag(seed: seed, generation: generation)
        for block in stride(from: 0, to: count, by: blockBytes) {
            let offset = diskOffset + UInt64(block)
            if generation == prefillGeneration {
                bytes.append(contentsOf: filler)
            } else {
                var generator = SeededGenerator(seed: seed ^ offset, stream: generation)
                bytes.append(contentsOf: randomBytes(blockBytes, &generator))
            }
            stamp(&bytes, at: block, diskOffset: offset, tag: tag)
        }
        return bytes
    }

    /// Describes how `actual` differs from `expected` for data read at `diskOffset`, or nil if
    /// they are equal.
    static func difference(expected: [UInt8], actual: [UInt8], diskOffset: UInt64, seed: UInt64) -> String? {
        let firstDifference = zip(expected, actual).enumerated().first { $0.element.0 != $0.element.1 }
        guard let first = firstDifference?.offset else {
            return expected.count == actual.count ? nil : "read \(actual.count) bytes, expected \(expected.count)"
        }
        let block = first / blockBytes * blockBytes
        let differing = zip(expected, actual).reduce(0) { $0 + ($1.0 != $1.1 ? 1 : 0) }
        var found = "block holds "
        let foundOffset = load(actual, at: block)
        let foundTag = load(actual, at: block + 8)
        if actual[block..<(block + blockBytes)].allSatisfy({ $0 == 0 }) {
            found += "only zeroes"
        } else if foundTag == tag(seed: seed, generation: prefillGeneration) {
            found += "the prefill pattern of disk offset 0x\(String(foundOffset, radix: 16))"
        } else if foundTag == tag(seed: seed, generation: verifyGeneration) {
            found += "the verification pattern of disk offset 0x\(String(foundOffset, radix: 16))"
        } else {
            found += "unknown data (stamp 0x\(String(foundOffset, radix: 16)), tag 0x\(String(foundTag, radix: 16)))"
        }
        return "disk offset 0x\(String(diskOffset + UInt64(first), radix: 16)) (byte \(first) of the read): "
            + "expected 0x\(String(expected[first], radix: 16)), got 0x\(String(actual[first], radix: 16)); "
            + "\(differing) of \(expected.count) bytes differ; \(found)"
    }

    private static func load(_ bytes: [UInt8], at index: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<8 { value |= UInt64(bytes[index + i]) << (8 * UInt64(i)) }
        return value
    }

    private static func randomBytes(_ count: Int, _ generator: inout SeededGenerator) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(count)
        while bytes.count < count {
            let word = generator.next()
            for i in 0..<min(8, count - bytes.count) {
                bytes.append(UInt8(truncatingIfNeeded: word >> (8 * UInt64(i))))
            }
        }
        return bytes
    }
}
