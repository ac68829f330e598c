import Virtio

extension BlockConfigSpace {
    /// Decodes the `virtio_blk_config` bytes a backend returned for GET_CONFIG at offset 0
    /// (VIRTIO 1.2 §5.2.4, all fields little-endian).
    ///
    /// A shorter answer is allowed. QEMU asks for 36, 48 or 57 bytes, and a field that lies
    /// wholly or partly past the end of `bytes` decodes as 0. Geometry and the fields after
    /// `write_zeroes_may_unmap` are not kept, because `BlockConfigSpace` does not model them.
    public init(decoding bytes: [UInt8]) {
        func field<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
            let size = MemoryLayout<T>.size
            guard offset + size <= bytes.count else { return 0 }
            var value: T = 0
            for i in 0..<size { value |= T(bytes[offset + i]) << (8 * i) }
            return value
        }
        self.init(
            capacitySectors: field(UInt64.self, at: 0),
            sizeMax: field(UInt32.self, at: 8),
            segMax: field(UInt32.self, at: 12),
            blockSize: field(UInt32.self, at: 20),
            physicalBlockExponent: field(UInt8.self, at: 24),
            alignmentOffset: field(UInt8.self, at: 25),
            minIOSize: field(UInt16.self, at: 26),
            optIOSize: field(UInt32.self, at: 28),
            writeCacheEnabled: field(UInt8.self, at: 32) != 0,
            numQueues: field(UInt16.self, at: 34),
            maxDiscardSectors: field(UInt32.self, at: 36),
            maxDiscardSegments: field(UInt32.self, at: 40),
            discardSectorAlignment: field(UInt32.self, at: 44),
            maxWriteZeroesSectors: field(UInt32.self, at: 48),
            maxWriteZeroesSegments: field(UInt32.self, at: 52),
            writeZeroesMayUnmap: field(UInt8.self, at: 56) != 0)
    }
}
