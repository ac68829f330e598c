import GuestMemory

/// The buffers of one request, gathered from a chain of descriptors the driver made available.
///
/// The chain is walked at most `queueSize` times; an indirect table is followed once, and
/// nested indirection is an error (VIRTIO 1.2 §2.7.5.3.1). Every segment is checked to be
/// guest RAM as it is loaded, so later copies can only fail if guest memory changes under them.
///
/// One value is made per queue and reused for every request: `load` keeps the segment storage
/// (no allocation per request).
public struct DescriptorChain {
    /// The head descriptor index: what goes back in the used ring.
    public private(set) var head: UInt16 = 0
    public private(set) var segments: [ChainSegment]
    public private(set) var readableBytes: UInt64 = 0
    public private(set) var writableBytes: UInt64 = 0

    public init() {
        segments = []
        segments.reserveCapacity(VirtioLimits.chainSegmentsMax)
    }

    /// Loads the chain starting at `head` from the descriptor table `table` of `queueSize`
    /// entries. Throws on any rule the driver broke; the chain is then unusable.
    public mutating func load(head: UInt16, table: RingMemory, queueSize: UInt16,
                              memory: GuestMemoryMap) throws(VirtqueueError) {
        self.head = head
        segments.removeAll(keepingCapacity: true)
        readableBytes = 0
        writableBytes = 0
        var index = head
        var budget = Int(queueSize)
        while true {
            guard index < queueSize else { throw .descriptorIndexOutOfRange(index) }
            guard budget > 0 else { throw .chainTooLong }
            budget -= 1
            let offset = Int(index) * Descriptor.sizeBytes
            let descriptor = Descriptor(address: table.loadU64(offset), length: table.loadU32(offset + 8),
                                        flags: table.loadU16(offset + 12), next: table.loadU16(offset + 14))
            if descriptor.isIndirect {
                guard !descriptor.hasNext else { throw .invalidIndirectTable(length: descriptor.length) }
                try loadIndirect(descriptor, memory: memory)
                return
            }
            try append(descriptor, memory: memory)
            guard descriptor.hasNext else { return }
            index = descriptor.next
        }
    }

    private mutating func loadIndirect(_ indirect: Descriptor, memory: GuestMemoryMap) throws(VirtqueueError) {
        let length = indirect.length
        guard length > 0, length % UInt32(Descriptor.sizeBytes) == 0,
              Int(length) / Descriptor.sizeBytes <= VirtioLimits.indirectEntriesMax
        else { throw .invalidIndirectTable(length: length) }
        let entries = UInt16(Int(length) / Descriptor.sizeBytes)
        let table = GuestAddress(indirect.address)
        guard memory.contains(table, length: UInt64(length)) else {
            throw .memory(.outOfRange(table, length: UInt64(length)))
        }
        var index: UInt16 = 0
        var budget = Int(entries)
        while true {
            guard index < entries else { throw .descriptorIndexOutOfRange(index) }
            guard budget > 0 else { throw .chainTooLong }
            budget -= 1
            let descriptor: Descriptor
            do {
                descriptor = try Self.readDescriptor(memory, at: GuestAddress(table.rawValue + UInt64(index) * 16))
            } catch {
                throw .memory(error)
            }
            guard !descriptor.isIndirect else { throw .nestedIndirect }
            try append(descriptor, memory: memory)
            guard descriptor.hasNext else { return }
            index = descriptor.next
        }
    }

    private static func readDescriptor(_ memory: GuestMemoryMap, at address: GuestAddress) throws(GuestMemoryError) -> Descriptor {
        var raw = (UInt64(0), UInt64(0))
        try withUnsafeMutableBytes(of: &raw) { (bytes) throws(GuestMemoryError) in try memory.read(address, into: bytes) }
        return Descriptor(address: UInt64(littleEndian: raw.0),
                          length: UInt32(truncatingIfNeeded: UInt64(littleEndian: raw.1)),
                          flags: UInt16(truncatingIfNeeded: UInt64(littleEndian: raw.1) >> 32),
                          next: UInt16(truncatingIfNeeded: UInt64(littleEndian: raw.1) >> 48))
    }

    private mutating func append(_ descriptor: Descriptor, memory: GuestMemoryMap) throws(VirtqueueError) {
        guard segments.count < VirtioLimits.chainSegmentsMax else { throw .chainTooLong }
        let address = GuestAddress(descriptor.address)
        guard memory.contains(address, length: UInt64(descriptor.length)) else {
            throw .memory(.outOfRange(address, length: UInt64(descriptor.length)))
        }
        if descriptor.isWritable {
            writableBytes += UInt64(descriptor.length)
        } else {
            guard segments.last?.isWritable != true else { throw .readableAfterWritable }  // even a 0-byte writable one
            readableBytes += UInt64(descriptor.length)
        }
        guard readableBytes + writableBytes <= VirtioLimits.chainBytesMax else { throw .chainTooLarge }
        segments.append(ChainSegment(address: descriptor.address, length: descriptor.length,
                                     isWritable: descriptor.isWritable))
    }

    /// The guest address of the last device-writable byte (the virtio-blk status byte), or nil
    /// if the chain has no writable byte.
    public var lastWritableByte: GuestAddress? {
        guard writableBytes > 0 else { return nil }
        for segment in segments.reversed() where segment.isWritable && segment.length > 0 {
            return GuestAddress(segment.address + UInt64(segment.length) - 1)
        }
        return nil
    }

    /// Calls `body` for each guest range that makes up `[offset, offset + length)` of the
    /// readable (or writable) bytes of the chain, in order. The range must lie inside them.
    @inline(__always)
    public func forEachRange<E: Error>(
        writable: Bool, offset: UInt64, length: UInt64,
        _ body: (GuestAddress, UInt64) throws(E) -> Void
    ) throws(E) {
        precondition(offset + length <= (writable ? writableBytes : readableBytes), "range outside chain")
        var skip = offset
        var left = length
        for segment in segments where segment.isWritable == writable {
            guard left > 0 else { return }
            let segmentLength = UInt64(segment.length)
            if skip >= segmentLength {
                skip -= segmentLength
                continue
            }
            let count = min(segmentLength - skip, left)
            try body(GuestAddress(segment.address + skip), count)
            skip = 0
            left -= count
        }
    }

    /// Copies `destination.count` readable bytes starting at `offset` out of guest memory.
    public func copyReadable(offset: UInt64, into destination: UnsafeMutableRawBufferPointer,
                             memory: GuestMemoryMap) throws(GuestMemoryError) {
        var done = 0
        try forEachRange(writable: false, offset: offset, length: UInt64(destination.count)) { (address, count) throws(GuestMemoryError) in
            try memory.read(address, into: UnsafeMutableRawBufferPointer(rebasing: destination[done..<(done + Int(count))]))
            done += Int(count)
        }
    }
}
