import GuestMemory
import LinuxSystem
import Virtio

/// The guest's virtio-blk driver for one queue. It owns a `SplitQueueDriver` over the
/// frontend's guest RAM, a fixed set of request slots, and the queue's kick, call and error
/// eventfds.
///
/// A request goes through four steps:
/// 1. `reserveSlot()`, or let `submit` pick a slot.
/// 2. `submit(_:in:)` writes the header and status sentinel into the slot's metadata, builds
///    the chain (direct or indirect), publishes it, and kicks when `needsKick()` says the
///    device wants it.
/// 3. `reapCompletions` or `waitForCompletions` take used elements off the ring and read the
///    status byte.
/// 4. The slot is free again, and its data buffer still holds what a read returned.
///
/// Every buffer is carved out of guest RAM when the queue is created. On the `.indirect` path
/// with reused segment storage, submitting and reaping allocate nothing, which is what
/// memx-bench needs. The `.direct` path goes through `SplitQueueDriver.addChain`, which builds
/// a small array per request.
///
/// A `BlockQueueClient` is not thread-safe. One thread at a time may use it, and that thread
/// need not be the one that created it.
public final class BlockQueueClient {
    /// What the status byte holds until the device writes it.
    public static let statusUnwritten: UInt8 = 0xff
    static let noSlot = UInt16.max

    public let index: Int
    public let guestRAM: GuestRAM
    public let area: BlockQueueArea
    public let options: BlockQueueOptions
    /// The eventfd we signal to kick the device (SET_VRING_KICK).
    public let kick: EventNotifier
    /// The eventfd the device signals on completion (SET_VRING_CALL).
    public let call: EventNotifier
    /// The eventfd the device may signal on a ring error (SET_VRING_ERR).
    public let errorNotifier: EventNotifier
    public let eventIndex: Bool
    /// Largest data segment, after `size_max` and `dataSegmentBytes` are applied.
    public let segmentBytesMax: UInt64
    /// The driver over the rings. Hostile tests may write descriptors or publish heads through
    /// it directly. Completions for heads this client did not submit are then reported as
    /// `badCompletion`.
    public var driver: SplitQueueDriver
    /// The avail ring viewed directly, to suppress interrupts while polling.
    let availRing: RingMemory
    public private(set) var completionWait: BlockQueueOptions.CompletionWait

    private var freeSlots: [UInt16]
    private var slotForHead: [UInt16]
    private var slotTypeCodes: [UInt32]
    private var slotWritableBytes: [Int]
    private var slotInFlight: [Bool]
    private var segments: [ChainSegment]

    /// Requests submitted and not yet reaped.
    public private(set) var outstanding = 0
    public private(set) var submittedCount = 0
    public private(set) var completedCount = 0
    /// Times we signalled the kick eventfd (EVENT_IDX or NO_NOTIFY decides).
    public private(set) var kickCount = 0
    /// Times the call eventfd was found signalled while waiting.
    public private(set) var notificationCount = 0

    init(index: Int, guestRAM: GuestRAM, area: BlockQueueArea, options: BlockQueueOptions,
         eventIndex: Bool, segmentBytesMax: UInt64) throws(FrontendError) {
        do {
            kick = try EventNotifier()
            call = try EventNotifier()
            errorNotifier = try EventNotifier()
        } catch {
            throw .socket(operation: "eventfd for queue \(index)", errno: error)
        }
        do {
            driver = try SplitQueueDriver(layout: area.ringLayout, memory: guestRAM.memory, eventIndex: eventIndex)
            availRing = try guestRAM.memory.ring(at: area.ringLayout.availRing, length: area.ringLayout.availRingBytes)
        } catch {
            throw .guestMemory(error)
        }
        self.index = index
        self.guestRAM = guestRAM
        self.area = area
        self.options = options
        self.eventIndex = eventIndex
        self.segmentBytesMax = segmentBytesMax
        self.completionWait = options.completionWait
        let slots = area.slotCount
        freeSlots = (0..<UInt16(slots)).reversed().map { $0 }
        slotForHead = [UInt16](repeating: Self.noSlot, count: Int(area.ringLayout.size))
        slotTypeCodes = [UInt32](repeating: 0, count: slots)
        slotWritableBytes = [Int](repeating: 0, count: slots)
        slotInFlight = [Bool](repeating: false, count: slots)
        segments = []
        segments.reserveCapacity(area.dataSegmentsMax + 2)
        setCompletionWait(options.completionWait)
    }

    public var queueSize: UInt16 { area.ringLayout.size }
    public var slotCount: Int { area.slotCount }
    public var freeSlotCount: Int { freeSlots.count }

    // MARK: Slots and data

    /// Takes a free slot so its data buffer can be filled before `submit(_:in:)`.
    public func reserveSlot() throws(FrontendError) -> Int {
        guard let slot = freeSlots.popLast() else { throw .queueFull(queue: index) }
        return Int(slot)
    }

    /// Returns a reserved slot that was never submitted.
    public func releaseSlot(_ slot: Int) {
        precondition(slot >= 0 && slot < slotCount && !slotInFlight[slot], "releasing a slot that is in flight")
        precondition(!freeSlots.contains(UInt16(slot)), "releasing a free slot")
        freeSlots.append(UInt16(slot))
    }

    /// Copies `bytes` into the slot's data buffer at `offset`.
    public func writeData(slot: Int, _ bytes: [UInt8], offset: Int = 0) throws(FrontendError) {
        try checkDataRange(slot: slot, offset: offset, count: bytes.count)
        let address = GuestAddress(area.dataAddress(slot: slot).rawValue + UInt64(offset))
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(GuestMemoryError) in try guestRAM.memory.write(address, from: raw) }
        }
        do { try result.get() } catch { throw .guestMemory(error) }
    }

    /// Copies `buffer.count` bytes of the slot's data buffer, from `offset`, into `buffer`.
    /// The buffer's storage is reused, so this does not allocate when it is already unique.
    public func readData(slot: Int, into buffer: inout [UInt8], offset: Int = 0) throws(FrontendError) {
        try checkDataRange(slot: slot, offset: offset, count: buffer.count)
        let address = GuestAddress(area.dataAddress(slot: slot).rawValue + UInt64(offset))
        let result = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(GuestMemoryError) in try guestRAM.memory.read(address, into: raw) }
        }
        do { try result.get() } catch { throw .guestMemory(error) }
    }

    /// The first `count` bytes of the slot's data buffer (what a read or GET_ID returned).
    public func readData(slot: Int, count: Int, offset: Int = 0) throws(FrontendError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try readData(slot: slot, into: &bytes, offset: offset)
        return bytes
    }

    private func checkDataRange(slot: Int, offset: Int, count: Int) throws(FrontendError) {
        guard slot >= 0, slot < slotCount, offset >= 0, count >= 0,
              UInt64(offset + count) <= area.dataBytesPerSlot
        else {
            throw .invalidArgument(
                "slot \(slot) data range \(offset)+\(count) (slots \(slotCount), \(area.dataBytesPerSlot) bytes each)")
        }
    }

    // MARK: Submission

    /// Submits `operation` in a slot of its own and returns the slot. For a write, `data` is
    /// copied into the slot's buffer first. It must hold `byteCount` bytes, or be nil to write
    /// whatever the buffer holds.
    @discardableResult
    public func submit(_ operation: BlockOperation, data: [UInt8]? = nil,
                       kick: Bool = true) throws(FrontendError) -> Int {
        let slot = try reserveSlot()
        do throws(FrontendError) {
            if let data {
                guard data.count == operation.readableDataBytes else {
                    throw FrontendError.invalidArgument(
                        "\(data.count) data bytes for a request carrying \(operation.readableDataBytes)")
                }
                try writeData(slot: slot, data)
            }
            try submit(operation, in: slot, kick: kick)
        } catch {
            freeSlots.append(UInt16(slot))
            throw error
        }
        return slot
    }

    /// Submits `operation` in a slot taken with `reserveSlot()`. With `kick` false the request
    /// is published but the device is not kicked, so that several requests can be batched.
    /// Call `kickIfNeeded()` after the batch.
    public func submit(_ operation: BlockOperation, in slot: Int, kick: Bool = true) throws(FrontendError) {
        guard slot >= 0, slot < slotCount, !slotInFlight[slot] else {
            throw .invalidArgument("slot \(slot) is out of range or already in flight")
        }
        let readable = operation.readableDataBytes
        let writable = operation.writableDataBytes
        guard readable >= 0, writable >= 0, UInt64(readable + writable) <= area.dataBytesPerSlot else {
            throw .invalidArgument(
                "request carries \(readable)+\(writable) data bytes; slots hold \(area.dataBytesPerSlot)")
        }
        try writeMetadata(operation, slot: slot)
        try buildSegments(slot: slot, readableBytes: readable, writableBytes: writable)
        let head: UInt16?
        switch options.descriptorLayout {
        case .direct:
            head = driver.addChain(segments)
        case .indirect:
            do {
                head = try driver.addIndirectChain(segments, table: area.indirectTableAddress(slot: slot))
            } catch {
                throw .guestMemory(error)
            }
        }
        guard let head else { throw .queueFull(queue: index) }
        slotForHead[Int(head)] = UInt16(slot)
        slotTypeCodes[slot] = operation.typeCode
        slotWritableBytes[slot] = writable
        slotInFlight[slot] = true
        outstanding += 1
        submittedCount += 1
        if kick { kickIfNeeded() }
    }

    /// Kicks the device if it asked to be kicked for what was published since the last kick.
    public func kickIfNeeded() {
        if driver.needsKick() {
            self.kick.signal()
            kickCount += 1
        }
    }

    /// Writes the 16-byte header, the status sentinel, and the DISCARD/WRITE_ZEROES ranges.
    private func writeMetadata(_ operation: BlockOperation, slot: Int) throws(FrontendError) {
        var header = (operation.typeCode.littleEndian, UInt32(0), operation.sector.littleEndian)
        let memory = guestRAM.memory
        do {
            try withUnsafeBytes(of: &header) { (raw) throws(GuestMemoryError) in
                try memory.write(area.headerAddress(slot: slot), from: UnsafeRawBufferPointer(rebasing: raw[0..<16]))
            }
            var status = Self.statusUnwritten
            try withUnsafeBytes(of: &status) { (raw) throws(GuestMemoryError) in
                try memory.write(area.statusAddress(slot: slot), from: raw)
            }
            switch operation {
            case .discard(let ranges), .writeZeroes(let ranges):
                for (i, range) in ranges.enumerated() {
                    var raw = (range.sector.littleEndian, range.sectorCount.littleEndian, range.flags.littleEndian)
                    let offset = UInt64(i) * DiscardRange.sizeBytes
                    let address = GuestAddress(area.dataAddress(slot: slot).rawValue + offset)
                    try withUnsafeBytes(of: &raw) { (bytes) throws(GuestMemoryError) in
                        try memory.write(address, from: UnsafeRawBufferPointer(rebasing: bytes[0..<16]))
                    }
                }
            default:
                break
            }
        } catch {
            throw .guestMemory(error)
        }
    }

    /// Fills `segments`: header, readable data, writable data, status. Data is cut at
    /// `segmentBytesMax`.
    private func buildSegments(slot: Int, readableBytes: Int, writableBytes: Int) throws(FrontendError) {
        segments.removeAll(keepingCapacity: true)
        segments.append(ChainSegment(address: area.headerAddress(slot: slot).rawValue, length: 16, isWritable: false))
        let data = area.dataAddress(slot: slot).rawValue
        try appendData(from: data, bytes: UInt64(readableBytes), writable: false)
        try appendData(from: data + UInt64(readableBytes), bytes: UInt64(writableBytes), writable: true)
        segments.append(ChainSegment(address: area.statusAddress(slot: slot).rawValue, length: 1, isWritable: true))
    }

    private func appendData(from start: UInt64, bytes: UInt64, writable: Bool) throws(FrontendError) {
        var address = start
        var left = bytes
        while left > 0 {
            guard segments.count < area.dataSegmentsMax + 1 else {
                throw .invalidArgument(
                    "request needs more than \(area.dataSegmentsMax) data segments of ≤ \(segmentBytesMax) bytes")
            }
            let length = min(left, segmentBytesMax)
            segments.append(ChainSegment(address: address, length: UInt32(length), isWritable: writable))
            address += length
            left -= length
        }
    }

    // MARK: Completion bookkeeping (used by BlockQueueClient+Completions.swift)

    /// Turns a used element into a completion and frees its slot.
    func complete(head: UInt16, usedLength: UInt32) throws(FrontendError) -> BlockCompletion {
        guard Int(head) < slotForHead.count else {
            throw .badCompletion(queue: index, "head \(head) is past the ring of \(queueSize)")
        }
        let slot16 = slotForHead[Int(head)]
        guard slot16 != Self.noSlot else {
            throw .badCompletion(queue: index,
                                 "head \(head) was not in flight (completed twice, or never made available)")
        }
        let slot = Int(slot16)
        slotForHead[Int(head)] = Self.noSlot
        let status: UInt8
        do {
            status = try guestRAM.memory.load(UInt8.self, at: area.statusAddress(slot: slot))
        } catch {
            throw .guestMemory(error)
        }
        slotInFlight[slot] = false
        freeSlots.append(slot16)
        outstanding -= 1
        completedCount += 1
        return BlockCompletion(slot: slot, head: head, statusByte: status, usedLength: usedLength,
                               typeCode: slotTypeCodes[slot], writableDataBytes: slotWritableBytes[slot])
    }

    /// Records that the call eventfd fired.
    func noteNotification() { notificationCount += 1 }

    /// Changes how completions are awaited. Polling suppresses interrupts; the call-notifier
    /// mode asks for them again.
    public func setCompletionWait(_ wait: BlockQueueOptions.CompletionWait) {
        completionWait = wait
        let size = Int(queueSize)
        switch (wait, eventIndex) {
        case (.pollUsedRing, true): availRing.storeU16(4 + 2 * size, driver.lastUsed &+ 0x8000)
        case (.pollUsedRing, false): availRing.storeU16(0, 1)  // VRING_AVAIL_F_NO_INTERRUPT
        case (.callNotifier, true): availRing.storeU16(4 + 2 * size, driver.lastUsed)
        case (.callNotifier, false): availRing.storeU16(0, 0)
        }
        RingMemory.fullFence()
    }
}
