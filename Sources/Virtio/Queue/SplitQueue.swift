import GuestMemory

/// Where a split virtqueue's three parts live in guest memory, and how big it is.
public struct SplitQueueLayout: Equatable, Sendable {
    public var size: UInt16
    public var descriptorTable: GuestAddress
    public var availRing: GuestAddress
    public var usedRing: GuestAddress

    public init(size: UInt16, descriptorTable: GuestAddress, availRing: GuestAddress, usedRing: GuestAddress) {
        self.size = size
        self.descriptorTable = descriptorTable
        self.availRing = availRing
        self.usedRing = usedRing
    }

    public var descriptorTableBytes: UInt64 { UInt64(size) * 16 }
    /// flags, idx, ring[size], used_event.
    public var availRingBytes: UInt64 { 6 + 2 * UInt64(size) }
    /// flags, idx, ring[size] of {id u32, len u32}, avail_event.
    public var usedRingBytes: UInt64 { 6 + 8 * UInt64(size) }
}

/// The device side of a split virtqueue (VIRTIO 1.2 §2.7): pops heads the driver made
/// available, and returns them through the used ring with interrupt suppression.
///
/// A `SplitQueue` belongs to the one data thread serving it. It holds views of the rings in
/// the memory snapshot it was built from; when the memory table changes, the thread builds a new
/// one (`rebuilt(memory:)`) carrying over its indices.
public struct SplitQueue {
    public let layout: SplitQueueLayout
    public let eventIndex: Bool
    public let descriptorTable: RingMemory
    let avail: RingMemory
    let used: RingMemory

    /// The next avail-ring slot to consume (what GET_VRING_BASE returns).
    public private(set) var nextAvail: UInt16
    /// Our copy of `used->idx`: the next used-ring slot to fill.
    public private(set) var nextUsed: UInt16
    /// `used->idx` as the driver last saw it notified (for EVENT_IDX batching).
    private var lastSignalledUsed: UInt16

    /// Builds the queue over `memory`, checking alignment (§2.7: descriptor table 16, avail 2,
    /// used 4) and that every part is guest RAM. `used->idx` is read from guest memory: split
    /// rings carry no used index in SET_VRING_BASE (rust-vmm #180).
    public init(layout: SplitQueueLayout, memory: GuestMemoryMap, nextAvail: UInt16, eventIndex: Bool) throws(VirtqueueError) {
        guard layout.size > 0, layout.size <= VirtioLimits.queueSizeMax, layout.size & (layout.size - 1) == 0 else {
            throw .invalidRingLayout("queue size \(layout.size) is not a power of two ≤ \(VirtioLimits.queueSizeMax)")
        }
        guard layout.descriptorTable.rawValue % 16 == 0, layout.availRing.rawValue % 2 == 0,
              layout.usedRing.rawValue % 4 == 0
        else { throw .invalidRingLayout("misaligned ring addresses") }
        do {
            descriptorTable = try memory.ring(at: layout.descriptorTable, length: layout.descriptorTableBytes)
            avail = try memory.ring(at: layout.availRing, length: layout.availRingBytes)
            used = try memory.ring(at: layout.usedRing, length: layout.usedRingBytes)
        } catch {
            throw .memory(error)
        }
        self.layout = layout
        self.eventIndex = eventIndex
        self.nextAvail = nextAvail
        self.nextUsed = used.loadAcquireU16(2)
        self.lastSignalledUsed = nextUsed
    }

    /// The same queue over a new memory snapshot, keeping its position.
    public func rebuilt(memory: GuestMemoryMap) throws(VirtqueueError) -> SplitQueue {
        var queue = try SplitQueue(layout: layout, memory: memory, nextAvail: nextAvail, eventIndex: eventIndex)
        queue.nextUsed = nextUsed
        queue.lastSignalledUsed = lastSignalledUsed
        return queue
    }

    /// Sets where consumption resumes (inflight recovery after a reconnect).
    public mutating func setNextAvail(_ index: UInt16) { nextAvail = index }

    /// `used->idx` in guest memory right now.
    public var guestUsedIndex: UInt16 { used.loadAcquireU16(2) }

    /// Pops the next available head, or nil if the driver has made nothing new available.
    @inline(__always)
    public mutating func popAvailable() throws(VirtqueueError) -> UInt16? {
        let availIndex = avail.loadAcquireU16(2)
        let pending = availIndex &- nextAvail
        if pending == 0 { return nil }
        guard pending <= layout.size else { throw .availIndexTooFar(availIndex: availIndex, nextAvail: nextAvail) }
        let head = avail.loadU16(4 + 2 * Int(nextAvail % layout.size))
        nextAvail &+= 1
        guard head < layout.size else { throw .descriptorIndexOutOfRange(head) }
        return head
    }

    /// Writes one used element (not yet visible to the driver: see `publishUsed`).
    @inline(__always)
    public mutating func addUsed(head: UInt16, length: UInt32, writer: GuestMemoryWriter) {
        let offset = 4 + 8 * Int(nextUsed % layout.size)
        used.storeU32(offset, UInt32(head))
        used.storeU32(offset + 4, length)
        writer.logRingWrite(GuestAddress(layout.usedRing.rawValue + UInt64(offset)), length: 8)
        nextUsed &+= 1
    }

    /// Makes every used element added so far visible (`used->idx`, release) and says whether
    /// the driver wants an interrupt for them (EVENT_IDX `vring_need_event`, or NO_INTERRUPT).
    @inline(__always)
    public mutating func publishUsed(writer: GuestMemoryWriter) -> Bool {
        used.storeReleaseU16(2, nextUsed)
        writer.logRingWrite(GuestAddress(layout.usedRing.rawValue + 2), length: 2)
        RingMemory.fullFence()
        let old = lastSignalledUsed
        let new = nextUsed
        guard old != new else { return false }
        lastSignalledUsed = new
        if eventIndex {
            let usedEvent = avail.loadU16(4 + 2 * Int(layout.size))
            return (new &- usedEvent &- 1) < (new &- old)
        }
        return avail.loadU16(0) & 1 == 0  // VRING_AVAIL_F_NO_INTERRUPT
    }

    /// Asks the driver to kick for the next request, then re-checks the ring: returns true if
    /// new requests arrived meanwhile (the caller must process them, or a kick is lost).
    @inline(__always)
    public mutating func enableNotifications() -> Bool {
        if eventIndex {
            used.storeU16(4 + 8 * Int(layout.size), nextAvail)  // avail_event
        } else {
            used.storeU16(0, 0)
        }
        RingMemory.fullFence()
        return avail.loadAcquireU16(2) != nextAvail
    }

    /// Tells the driver not to kick while we are busy draining the ring anyway.
    @inline(__always)
    public mutating func disableNotifications() {
        if !eventIndex { used.storeU16(0, 1) }  // VRING_USED_F_NO_NOTIFY
    }
}

extension SplitQueue {
    /// Spins for up to `nanoseconds` waiting for the driver to make something available,
    /// without asking it to kick. Returns true as soon as it does.
    public func pollAvailable(nanoseconds: UInt64) -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .nanoseconds(Int64(nanoseconds)))
        var spins = 0
        while true {
            if avail.loadAcquireU16(2) != nextAvail { return true }
            spins &+= 1
            // Reading the clock costs ~20 ns; checking every 64 spins keeps the loop tight.
            if spins & 63 == 0, clock.now >= deadline { return false }
        }
    }
}
