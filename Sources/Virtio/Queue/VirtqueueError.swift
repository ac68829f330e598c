import GuestMemory

/// A driver broke the split-virtqueue rules. Each case names the rule; none is our fault.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `avail->idx` moved more than the queue size past our position: the ring is corrupt.
    case availIndexTooFar(availIndex: UInt16, nextAvail: UInt16)
    /// A head or `next` index past the end of the descriptor table.
    case descriptorIndexOutOfRange(UInt16)
    /// The chain is longer than the queue allows: a loop, or a driver bug.
    case chainTooLong
    /// An indirect descriptor inside an indirect table (VIRTIO 1.2 §2.7.5.3.1 forbids nesting).
    case nestedIndirect
    /// An indirect descriptor with NEXT set, or with a length that is 0, not a multiple of 16,
    /// or larger than `VirtioLimits.indirectEntriesMax` entries.
    case invalidIndirectTable(length: UInt32)
    /// A device-readable descriptor after a device-writable one (§2.7.4.2).
    case readableAfterWritable
    /// The chain's buffers add up to more than `VirtioLimits.chainBytesMax`.
    case chainTooLarge
    /// A buffer (or an indirect table) outside guest memory.
    case memory(GuestMemoryError)
    /// Ring addresses that are misaligned or do not fit in guest memory.
    case invalidRingLayout(String)

    public var description: String {
        switch self {
        case .availIndexTooFar(let a, let n): "avail index \(a) is more than a queue ahead of \(n)"
        case .descriptorIndexOutOfRange(let i): "descriptor index \(i) is past the table"
        case .chainTooLong: "descriptor chain is longer than the queue (loop?)"
        case .nestedIndirect: "nested indirect descriptor"
        case .invalidIndirectTable(let l): "invalid indirect table of \(l) bytes"
        case .readableAfterWritable: "device-readable descriptor after a writable one"
        case .chainTooLarge: "descriptor chain describes more than 4 GiB"
        case .memory(let e): e.description
        case .invalidRingLayout(let why): "invalid ring layout: \(why)"
        }
    }
}
