import Testing
import Virtio

/// `BlockConfigSpace.encoded()` against the `virtio_blk_config` layout of vhost-user.md §2.2
/// (little-endian, offsets in bytes).
@Suite("BlockConfigSpace")
struct ConfigSpaceTests {
    /// Every field set to a distinct value whose bytes are all non-zero, so a field at the
    /// wrong offset or of the wrong width shows up.
    static let config = BlockConfigSpace(
        capacitySectors: 0x0102_0304_0506_0708, sizeMax: 0x1112_1314, segMax: 0x2122_2324, blockSize: 0x3132_3334,
        physicalBlockExponent: 0x41, alignmentOffset: 0x42, minIOSize: 0x4344, optIOSize: 0x5152_5354,
        writeCacheEnabled: true, numQueues: 0x6162, maxDiscardSectors: 0x7172_7374, maxDiscardSegments: 0x8182_8384,
        discardSectorAlignment: 0x9192_9394, maxWriteZeroesSectors: 0xa1a2_a3a4, maxWriteZeroesSegments: 0xb1b2_b3b4,
        writeZeroesMayUnmap: true)

    static func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    /// The expected bytes, built field by field from the spec table.
    static let expected: [UInt8] = {
        var bytes: [UInt8] = []
        bytes += le(UInt64(0x0102_0304_0506_0708))  // 0 capacity
        bytes += le(UInt32(0x1112_1314))            // 8 size_max
        bytes += le(UInt32(0x2122_2324))            // 12 seg_max
        bytes += [0, 0, 0, 0]                       // 16 geometry (legacy, left zero)
        bytes += le(UInt32(0x3132_3334))            // 20 blk_size
        bytes += [0x41, 0x42] + le(UInt16(0x4344))  // 24 physical_block_exp, alignment_offset, min_io_size
        bytes += le(UInt32(0x5152_5354))            // 28 opt_io_size
        bytes += [1, 0]                             // 32 wce, unused
        bytes += le(UInt16(0x6162))                 // 34 num_queues
        bytes += le(UInt32(0x7172_7374))            // 36 max_discard_sectors
        bytes += le(UInt32(0x8182_8384))            // 40 max_discard_seg
        bytes += le(UInt32(0x9192_9394))            // 44 discard_sector_alignment
        bytes += le(UInt32(0xa1a2_a3a4))            // 48 max_write_zeroes_sectors
        bytes += le(UInt32(0xb1b2_b3b4))            // 52 max_write_zeroes_seg
        bytes += [1, 0, 0, 0]                       // 56 write_zeroes_may_unmap, unused1[3]
        return bytes
    }()

    @Test("encoded bytes match the virtio_blk_config layout")
    func layout() {
        let bytes = Self.config.encoded()
        #expect(bytes.count == BlockConfigSpace.sizeBytes)
        #expect(bytes.count == 60)
        #expect(bytes == Self.expected)
    }

    @Test("the prefixes QEMU 7.2 asks for (36, 48, 57 bytes) end on field boundaries",
          arguments: [36, 48, 57])
    func qemuSizes(_ size: Int) {
        #expect(Array(Self.config.encoded().prefix(size)) == Array(Self.expected.prefix(size)))
        #expect(size <= BlockConfigSpace.sizeBytes)
    }

    @Test("wce is at the offset SET_CONFIG writes; false encodes as 0")
    func writeCache() {
        #expect(BlockConfigSpace.writeCacheOffset == 32)
        var config = Self.config
        config.writeCacheEnabled = false
        config.writeZeroesMayUnmap = false
        let bytes = config.encoded()
        #expect(bytes[32] == 0)
        #expect(bytes[56] == 0)
        #expect(Array(bytes[0..<32]) == Array(Self.expected[0..<32]))
        #expect(Array(bytes[33..<56]) == Array(Self.expected[33..<56]))
    }
}
