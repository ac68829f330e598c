import GuestMemory

/// The driver (guest) side of a split virtqueue: what the guest's virtio driver does, for the
/// Swift frontend, the tests and memx-bench. It lays the rings out in guest memory, makes
/// chains available, and reaps used elements.
///
/// Not for the backend's data path; it trusts the memory it writes.
public struct SplitQueueDriver {
    public let layout: SplitQueueLayout
    public let eventIndex: Bool
    let memory: GuestMemoryMap
    let descriptors: RingMemory
    let avail: RingMemory
    let used: RingMemory
    /// Free descriptor indices (a stack).
    private var free: [UInt16]
    public private(set) var nextAvail: UInt16 = 0
    public private(set) var lastUsed: UInt16 = 0
    /// avail->idx when the backend was last kicked (EVENT_IDX kick suppression).
    private var lastKickedAvail: UInt16 = 0

    /// Bytes the three rings need for `size` entries, laid out at a 4 KiB-aligned base.
    public static func ringBytes(size: UInt16) -> UInt64 {
        let l = layout(size: size, base: GuestAddress(0))
        return l.usedRing.rawValue + l.usedRingBytes
    }

    /// The standard layout (descriptor table, then avail ring, then the used ring 4 KiB aligned).
    public static func layout(size: UInt16, base: GuestAddress) -> SplitQueueLayout {
        let desc = base.rawValue
        let avail = desc + 16 * UInt64(size)
        let usedUnaligned = avail + 6 + 2 * UInt64(size)
        let used = (usedUnaligned + 4095) & ~4095
        return SplitQueueLayout(size: size, descriptorTable: GuestAddress(desc), availRing: GuestAddress(avail),
                                usedRing: GuestAddress(used))
    }

    /// Sets up an empty queue at `layout` (rings zeroed).
    public init(layout: SplitQueueLayout, memory: GuestMemoryMap, eventIndex: Bool) throws(GuestMemoryError) {
        self.layout = layout
        self.eventIndex = eventIndex
        self.memory = memory
        descriptors = try memory.ring(at: layout.descriptorTable, length: layout.descriptorTableBytes)
        avail = try memory.ring(at: layout.availRing, length: layout.availRingBytes)
        used = try memory.ring(at: layout.usedRing, length: layout.usedRingBytes)
        descriptors.zero()
        avail.zero()
        used.zero()
        free = (0..<layout.size).reversed().map { $0 }
    }

    /// Free descriptors left.
    public var freeCount: Int { free.count }

    /// Writes one descriptor directly (hostile tests build arbitrary tables with this).
    public func writeDescriptor(_ index: UInt16, _ d: Descriptor) {
        let offset = Int(index) * 16
        descriptors.storeU64(offset, d.address)
        descriptors.storeU32(offset + 8, d.length)
        descriptors.storeU16(offset + 12, d.flags)
        descriptors.storeU16(offset + 14, d.next)
    }

    /// Makes a chain of `buffers` (in order; writable ones last) available and returns its head,
    /// or nil if there are not enough free descriptors.
    public mutating func addChain(_ buffers: [ChainSegment]) -> UInt16? {
        guard !buffers.isEmpty, buffers.count <= free.count else { return nil }
        var indices: [UInt16] = []
        for _ in buffers { indices.append(free.removeLast()) }
        for (i, buffer) in buffers.enumerated() {
            let last = i == buffers.count - 1
            var flags: UInt16 = buffer.isWritable ? Descriptor.flagWrite : 0
            if !last { flags |= Descriptor.flagNext }
            writeDescriptor(indices[i], Descriptor(address: buffer.address, length: buffer.length, flags: flags,
                                                   next: last ? 0 : indices[i + 1]))
        }
        publish(head: indices[0])
        return indices[0]
    }

    /// Makes `buffers` available through one indirect table written at `table` (which must
    /// have room for 16 bytes per buffer). Uses one ring descriptor.
    public mutating func addIndirectChain(_ buffers: [ChainSegment], table: GuestAddress) throws(GuestMemoryError) -> UInt16? {
        guard let slot = free.popLast() else { return nil }
        for (i, buffer) in buffers.enumerated() {
            let last = i == buffers.count - 1
            var flags: UInt16 = buffer.isWritable ? Descriptor.flagWrite : 0
            if !last { flags |= Descriptor.flagNext }
            var raw = (buffer.address.littleEndian,
                       (UInt64(buffer.length) | UInt64(flags) << 32 | UInt64(last ? 0 : UInt16(i + 1)) << 48).littleEndian)
            try withUnsafeBytes(of: &raw) { (bytes) throws(GuestMemoryError) in
                try memory.write(GuestAddress(table.rawValue + UInt64(i) * 16), from: bytes)
            }
        }
        writeDescriptor(slot, Descriptor(address: table.rawValue, length: UInt32(buffers.count * 16),
                                         flags: Descriptor.flagIndirect, next: 0))
        publish(head: slot)
        return slot
    }

    /// Puts `head` in the avail ring and publishes `avail->idx` (release). Hostile tests call
    /// this with heads they wrote themselves.
    public mutating func publish(head: UInt16) {
        avail.storeU16(4 + 2 * Int(nextAvail % layout.size), head)
        nextAvail &+= 1
        avail.storeReleaseU16(2, nextAvail)
    }

    /// Sets `avail->idx` to an arbitrary value (hostile tests).
    public mutating func forceAvailIndex(_ value: UInt16) {
        nextAvail = value
        avail.storeReleaseU16(2, value)
    }

    /// True if the device asked to be kicked for what was published since the last kick
    /// (EVENT_IDX `avail_event`, or the used ring's NO_NOTIFY flag). Call before kicking.
    public mutating func needsKick() -> Bool {
        RingMemory.fullFence()
        let old = lastKickedAvail
        let new = nextAvail
        lastKickedAvail = new
        if eventIndex {
            let availEvent = used.loadU16(4 + 8 * Int(layout.size))
            return (new &- availEvent &- 1) < (new &- old)
        }
        return used.loadU16(0) & 1 == 0
    }

    /// Reaps one used element, returning (head, length), and frees its descriptors. With
    /// EVENT_IDX it also asks for an interrupt on the next completion (`used_event`).
    /// With `releasing: false` the chain's descriptors stay allocated, for callers that
    /// re-publish the same fixed chains (the allocation-free benchmark loop).
    public mutating func popUsed(releasing: Bool = true) -> (head: UInt16, length: UInt32)? {
        let usedIndex = used.loadAcquireU16(2)
        guard usedIndex != lastUsed else { return nil }
        let offset = 4 + 8 * Int(lastUsed % layout.size)
        let head = UInt16(truncatingIfNeeded: used.loadU32(offset))
        let length = used.loadU32(offset + 4)
        lastUsed &+= 1
        if eventIndex { avail.storeU16(4 + 2 * Int(layout.size), lastUsed) }
        if releasing { releaseChain(head) }
        return (head, length)
    }

    /// The used index the device published.
    public var deviceUsedIndex: UInt16 { used.loadAcquireU16(2) }

    private mutating func releaseChain(_ head: UInt16) {
        guard head < layout.size else { return }
        var index = head
        var budget = Int(layout.size)
        while budget > 0 {
            budget -= 1
            let flags = descriptors.loadU16(Int(index) * 16 + 12)
            free.append(index)
            guard flags & Descriptor.flagNext != 0 else { return }
            index = descriptors.loadU16(Int(index) * 16 + 14)
        }
    }
}
