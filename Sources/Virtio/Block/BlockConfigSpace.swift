/// The virtio-blk configuration space (`struct virtio_blk_config`, VIRTIO 1.2 §5.2.4), all
/// little-endian. QEMU 7.2 reads 36, 48 or 57 bytes of it depending on discard/write-zeroes.
public struct BlockConfigSpace: Equatable, Sendable {
    /// Bytes we encode: up to and including `write_zeroes_may_unmap` and its padding.
    public static let sizeBytes = 60

    public var capacitySectors: UInt64
    public var sizeMax: UInt32
    public var segMax: UInt32
    public var blockSize: UInt32
    public var physicalBlockExponent: UInt8
    public var alignmentOffset: UInt8
    public var minIOSize: UInt16
    public var optIOSize: UInt32
    public var writeCacheEnabled: Bool
    public var numQueues: UInt16
    public var maxDiscardSectors: UInt32
    public var maxDiscardSegments: UInt32
    public var discardSectorAlignment: UInt32
    public var maxWriteZeroesSectors: UInt32
    public var maxWriteZeroesSegments: UInt32
    public var writeZeroesMayUnmap: Bool

    public init(capacitySectors: UInt64, sizeMax: UInt32, segMax: UInt32, blockSize: UInt32,
                physicalBlockExponent: UInt8, alignmentOffset: UInt8, minIOSize: UInt16, optIOSize: UInt32,
                writeCacheEnabled: Bool, numQueues: UInt16, maxDiscardSectors: UInt32, maxDiscardSegments: UInt32,
                discardSectorAlignment: UInt32, maxWriteZeroesSectors: UInt32, maxWriteZeroesSegments: UInt32,
                writeZeroesMayUnmap: Bool) {
        self.capacitySectors = capacitySectors
        self.sizeMax = sizeMax
        self.segMax = segMax
        self.blockSize = blockSize
        self.physicalBlockExponent = physicalBlockExponent
        self.alignmentOffset = alignmentOffset
        self.minIOSize = minIOSize
        self.optIOSize = optIOSize
        self.writeCacheEnabled = writeCacheEnabled
        self.numQueues = numQueues
        self.maxDiscardSectors = maxDiscardSectors
        self.maxDiscardSegments = maxDiscardSegments
        self.discardSectorAlignment = discardSectorAlignment
        self.maxWriteZeroesSectors = maxWriteZeroesSectors
        self.maxWriteZeroesSegments = maxWriteZeroesSegments
        self.writeZeroesMayUnmap = writeZeroesMayUnmap
    }

    /// The encoded bytes (geometry left zero: legacy, and QEMU masks the bit).
    public func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.sizeBytes)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            withUnsafeBytes(of: value.littleEndian) { raw in
                for i in 0..<raw.count { bytes[offset + i] = raw[i] }
            }
        }
        put(capacitySectors, at: 0)
        put(sizeMax, at: 8)
        put(segMax, at: 12)
        put(blockSize, at: 20)
        put(physicalBlockExponent, at: 24)
        put(alignmentOffset, at: 25)
        put(minIOSize, at: 26)
        put(optIOSize, at: 28)
        put(UInt8(writeCacheEnabled ? 1 : 0), at: 32)
        put(numQueues, at: 34)
        put(maxDiscardSectors, at: 36)
        put(maxDiscardSegments, at: 40)
        put(discardSectorAlignment, at: 44)
        put(maxWriteZeroesSectors, at: 48)
        put(maxWriteZeroesSegments, at: 52)
        put(UInt8(writeZeroesMayUnmap ? 1 : 0), at: 56)
        return bytes
    }

    /// Offset of the `wce` byte, the only field a driver writes (SET_CONFIG).
    public static let writeCacheOffset = 32
}
