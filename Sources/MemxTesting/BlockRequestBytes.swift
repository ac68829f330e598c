/// The bytes a guest driver puts in virtio-blk request buffers, for tests that build requests
/// by hand (VIRTIO 1.2 §5.2.6).
public enum BlockRequestBytes {
    /// The 16-byte header `{type u32, ioprio u32, sector u64}`, little-endian.
    public static func header(type: UInt32, sector: UInt64, ioprio: UInt32 = 0) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: type.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: ioprio.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: sector.littleEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// One DISCARD / WRITE_ZEROES range `{sector u64, num_sectors u32, flags u32}`.
    public static func range(sector: UInt64, count: UInt32, flags: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        withUnsafeBytes(of: sector.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: count.littleEndian) { bytes.append(contentsOf: $0) }
        withUnsafeBytes(of: flags.littleEndian) { bytes.append(contentsOf: $0) }
        return bytes
    }
}
