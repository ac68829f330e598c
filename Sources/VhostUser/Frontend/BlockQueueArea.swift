import GuestMemory
import Virtio

/// Where one queue lives in guest RAM. It holds the split-ring parts, a metadata record per
/// request slot (header, status byte, indirect table), and a data buffer per slot.
///
/// The area is carved once per queue index and reused across stop/start, so a test that
/// restarts the device many times does not exhaust guest RAM. Rings and metadata are small and
/// usually land in the q35 low region. Data buffers land in the high region, so one request's
/// header and its data are translated through different regions.
public struct BlockQueueArea: Equatable, Sendable {
    /// Bytes of a slot's metadata before the indirect table: header (16), status (1), padding.
    public static let metadataHeaderBytes: UInt64 = 32
    /// Alignment of data buffers: a page, like a guest's bio pages.
    public static let dataAlignment: UInt64 = 4096

    public let ringLayout: SplitQueueLayout
    public let slotCount: Int
    public let dataBytesPerSlot: UInt64
    /// Data segments one request may use (sizes the indirect tables).
    public let dataSegmentsMax: Int
    public let metadataBase: GuestAddress
    public let metadataStrideBytes: UInt64
    public let dataBase: GuestAddress
    public let dataStrideBytes: UInt64

    /// Carves an area for a ring of `queueSize` entries out of `ram`.
    static func carve(from ram: GuestRAM, queueSize: UInt16, slotCount: Int, dataBytesPerSlot: Int,
                      dataSegmentsMax: Int) throws(FrontendError) -> BlockQueueArea {
        let ringBase = try ram.allocate(bytes: SplitQueueDriver.ringBytes(size: queueSize), alignment: 4096)
        let ringLayout = SplitQueueDriver.layout(size: queueSize, base: ringBase)
        let tableBytes = UInt64(2 + dataSegmentsMax) * UInt64(Descriptor.sizeBytes)
        let metadataStride = (metadataHeaderBytes + tableBytes + 63) & ~63
        let metadataBase = try ram.allocate(bytes: metadataStride * UInt64(slotCount), alignment: 64)
        let dataStride = (UInt64(dataBytesPerSlot) + dataAlignment - 1) & ~(dataAlignment - 1)
        let dataBase = try ram.allocate(bytes: dataStride * UInt64(slotCount), alignment: dataAlignment)
        return BlockQueueArea(ringLayout: ringLayout, slotCount: slotCount, dataBytesPerSlot: UInt64(dataBytesPerSlot),
                              dataSegmentsMax: dataSegmentsMax, metadataBase: metadataBase,
                              metadataStrideBytes: metadataStride, dataBase: dataBase, dataStrideBytes: dataStride)
    }

    /// Guest RAM one queue needs, for sizing `GuestRAM` up front (with alignment slack).
    public static func bytesNeeded(queueSize: UInt16, slotCount: Int, dataBytesPerSlot: Int,
                                   dataSegmentsMax: Int) -> UInt64 {
        let ring = SplitQueueDriver.ringBytes(size: queueSize) + 4096
        let metadata = (metadataHeaderBytes + UInt64(2 + dataSegmentsMax) * 16 + 63) / 64 * 64 * UInt64(slotCount) + 64
        let dataStride = (UInt64(dataBytesPerSlot) + dataAlignment - 1) / dataAlignment * dataAlignment
        let data = dataStride * UInt64(slotCount) + dataAlignment
        return ring + metadata + data
    }

    /// True if this area can serve a queue with these parameters.
    func fits(queueSize: UInt16, slotCount: Int, dataBytesPerSlot: Int, dataSegmentsMax: Int) -> Bool {
        ringLayout.size == queueSize && self.slotCount == slotCount && self.dataBytesPerSlot == UInt64(dataBytesPerSlot)
            && self.dataSegmentsMax >= dataSegmentsMax
    }

    /// The slot's 16-byte request header `{type u32, ioprio u32, sector u64}`.
    public func headerAddress(slot: Int) -> GuestAddress {
        GuestAddress(metadataBase.rawValue + UInt64(slot) * metadataStrideBytes)
    }

    /// The slot's status byte.
    public func statusAddress(slot: Int) -> GuestAddress {
        GuestAddress(headerAddress(slot: slot).rawValue + 16)
    }

    /// The slot's indirect descriptor table (16-byte aligned).
    public func indirectTableAddress(slot: Int) -> GuestAddress {
        GuestAddress(headerAddress(slot: slot).rawValue + Self.metadataHeaderBytes)
    }

    /// The slot's data buffer.
    public func dataAddress(slot: Int) -> GuestAddress {
        GuestAddress(dataBase.rawValue + UInt64(slot) * dataStrideBytes)
    }
}
