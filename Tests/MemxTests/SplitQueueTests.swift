import GuestMemory
import MemxTesting
import Testing
import Virtio

/// `SplitQueue` (device side) against `SplitQueueDriver` (guest side) on fake memory:
/// consumption, completion, interrupt and kick suppression, and hostile ring layouts
/// (vhost-user.md §2.4).
@Suite("SplitQueue")
struct SplitQueueTests {
    let memory: FakeGuestMemory

    init() throws {
        memory = try FakeGuestMemory(regions: [(base: 0, size: 0xa0000), (base: 0xc0000, size: 0x100000)])
    }

    /// A driver and a device over the same fresh rings.
    func makePair(size: UInt16 = 8, eventIndex: Bool) throws -> (SplitQueueDriver, SplitQueue) {
        let driver = memory.makeDriver(size: size, eventIndex: eventIndex)
        let queue = try SplitQueue(layout: driver.layout, memory: memory.map, nextAvail: 0, eventIndex: eventIndex)
        return (driver, queue)
    }

    /// A read request's buffers: header, data, status.
    func readRequest(dataBytes: UInt32 = 512) -> [ChainSegment] {
        [
            ChainSegment(address: memory.allocate(16).rawValue, length: 16, isWritable: false),
            ChainSegment(address: memory.allocate(UInt64(dataBytes)).rawValue, length: dataBytes, isWritable: true),
            ChainSegment(address: memory.allocate(1).rawValue, length: 1, isWritable: true),
        ]
    }

    /// Makes `buffers` available and returns the head (the driver must have room).
    func add(_ driver: inout SplitQueueDriver, _ buffers: [ChainSegment]) throws -> UInt16 {
        let head = driver.addChain(buffers)
        return try #require(head)
    }

    // Guest-side ring fields the device reads or writes, addressed independently of SplitQueue.
    func availFlagsAddress(_ layout: SplitQueueLayout) -> GuestAddress { layout.availRing }
    func usedEventAddress(_ layout: SplitQueueLayout) -> GuestAddress {
        GuestAddress(layout.availRing.rawValue + 4 + 2 * UInt64(layout.size))
    }
    func usedFlagsAddress(_ layout: SplitQueueLayout) -> GuestAddress { layout.usedRing }
    func usedIndexAddress(_ layout: SplitQueueLayout) -> GuestAddress { GuestAddress(layout.usedRing.rawValue + 2) }
    func availEventAddress(_ layout: SplitQueueLayout) -> GuestAddress {
        GuestAddress(layout.usedRing.rawValue + 4 + 8 * UInt64(layout.size))
    }
    func usedElement(_ layout: SplitQueueLayout, slot: UInt16) -> (id: UInt32, length: UInt32) {
        let address = layout.usedRing.rawValue + 4 + 8 * UInt64(slot)
        return (memory.load(UInt32.self, at: GuestAddress(address)), memory.load(UInt32.self, at: GuestAddress(address + 4)))
    }

    // MARK: - Round trip

    @Test("pop, load, add used, publish: the driver reaps what the device completed", arguments: [false, true])
    func roundTrip(eventIndex: Bool) throws {
        var (driver, queue) = try makePair(eventIndex: eventIndex)
        let buffers = readRequest()
        let head = try add(&driver, buffers)
        #expect(try queue.popAvailable() == head)
        #expect(try queue.popAvailable() == nil)
        #expect(queue.nextAvail == 1)

        var chain = DescriptorChain()
        try chain.load(head: head, table: queue.descriptorTable, queueSize: queue.layout.size, memory: memory.map)
        #expect(chain.segments == buffers)

        queue.addUsed(head: head, length: 513, writer: memory.writer)
        #expect(queue.guestUsedIndex == 0, "not visible before publishUsed")
        #expect(driver.popUsed() == nil)
        // With EVENT_IDX the driver's used_event starts at 0: "interrupt after the first".
        #expect(queue.publishUsed(writer: memory.writer) == true)
        #expect(queue.guestUsedIndex == 1)
        #expect(queue.nextUsed == 1)
        let popped = driver.popUsed()
        let reaped = try #require(popped)
        #expect(reaped.head == head && reaped.length == 513)
        #expect(driver.freeCount == 8)
        #expect(queue.publishUsed(writer: memory.writer) == false, "nothing new to publish")
    }

    @Test("out-of-order completion: used elements carry the heads in completion order")
    func outOfOrder() throws {
        var (driver, queue) = try makePair(size: 16, eventIndex: false)
        let a = try add(&driver, readRequest())
        let b = try add(&driver, readRequest())
        let c = try add(&driver, readRequest())
        #expect(try [queue.popAvailable(), queue.popAvailable(), queue.popAvailable()] == [a, b, c])
        for (head, length) in [(c, UInt32(3)), (a, 1), (b, 2)] {
            queue.addUsed(head: head, length: length, writer: memory.writer)
        }
        #expect(queue.publishUsed(writer: memory.writer) == true)
        var reaped: [UInt16] = []
        while let element = driver.popUsed() { reaped.append(element.head) }
        #expect(reaped == [c, a, b])
        #expect(usedElement(driver.layout, slot: 0) == (UInt32(c), 3))
    }

    @Test("indices wrap at 65535: heads are popped in order across the wrap")
    func availWrap() throws {
        var driver = memory.makeDriver(size: 4, eventIndex: false)
        driver.forceAvailIndex(65534)
        var queue = try SplitQueue(layout: driver.layout, memory: memory.map, nextAvail: 65534, eventIndex: false)
        var pushed: [UInt16] = []
        for _ in 0..<4 { pushed.append(try add(&driver, [readRequest()[1]])) }
        #expect(driver.nextAvail == 2)
        var popped: [UInt16] = []
        while let head = try queue.popAvailable() { popped.append(head) }
        #expect(popped == pushed)
        #expect(queue.nextAvail == 2)
    }

    @Test("used->idx is read from guest memory at init, and rebuilt() keeps the position")
    func usedIndexFromGuest() throws {
        let driver = memory.makeDriver(size: 8, eventIndex: false)
        memory.store(UInt16(1234), at: usedIndexAddress(driver.layout))
        var queue = try SplitQueue(layout: driver.layout, memory: memory.map, nextAvail: 77, eventIndex: false)
        #expect(queue.nextUsed == 1234)
        #expect(queue.nextAvail == 77)
        queue.addUsed(head: 5, length: 9, writer: memory.writer)
        #expect(usedElement(driver.layout, slot: 1234 % 8) == (5, 9))
        _ = queue.publishUsed(writer: memory.writer)
        #expect(memory.load(UInt16.self, at: usedIndexAddress(driver.layout)) == 1235)

        memory.store(UInt16(0), at: usedIndexAddress(driver.layout))  // ignored by rebuilt()
        let rebuilt = try queue.rebuilt(memory: memory.map)
        #expect(rebuilt.nextUsed == 1235)
        #expect(rebuilt.nextAvail == 77)
    }

    // MARK: - Interrupt suppression

    @Test("without EVENT_IDX, NO_INTERRUPT suppresses the interrupt")
    func noInterrupt() throws {
        var (_, queue) = try makePair(eventIndex: false)
        let layout = queue.layout
        memory.store(UInt16(1), at: availFlagsAddress(layout))
        queue.addUsed(head: 0, length: 1, writer: memory.writer)
        #expect(queue.publishUsed(writer: memory.writer) == false)
        memory.store(UInt16(0), at: availFlagsAddress(layout))
        queue.addUsed(head: 1, length: 1, writer: memory.writer)
        #expect(queue.publishUsed(writer: memory.writer) == true)
        // used_event is ignored without EVENT_IDX.
        memory.store(UInt16(100), at: usedEventAddress(layout))
        queue.addUsed(head: 2, length: 1, writer: memory.writer)
        #expect(queue.publishUsed(writer: memory.writer) == true)
    }

    /// True if publishing used elements `[old, new)` crosses `usedEvent`: the driver asked for
    /// an interrupt once the element at index `usedEvent` is used (VIRTIO 1.2 §2.7.10). A
    /// model written from the spec's words, not from `vring_need_event`.
    static func crosses(old: UInt16, new: UInt16, usedEvent: UInt16) -> Bool {
        var index = old
        while index != new {
            if index == usedEvent { return true }
            index &+= 1
        }
        return false
    }

    @Test("with EVENT_IDX, publishUsed notifies exactly when the batch passes used_event",
          arguments: [UInt16(0), 100, 65530, 65535])
    func eventIndexDecisions(start: UInt16) throws {
        let driver = memory.makeDriver(size: 16, eventIndex: true)
        let layout = driver.layout
        for batch in UInt16(1)...6 {
            for offset in -3...8 {
                let usedEvent = start &+ UInt16(bitPattern: Int16(offset))
                memory.store(start, at: usedIndexAddress(layout))
                var queue = try SplitQueue(layout: layout, memory: memory.map, nextAvail: 0, eventIndex: true)
                memory.store(usedEvent, at: usedEventAddress(layout))
                for i in 0..<batch { queue.addUsed(head: i, length: 1, writer: memory.writer) }
                let expected = Self.crosses(old: start, new: start &+ batch, usedEvent: usedEvent)
                #expect(queue.publishUsed(writer: memory.writer) == expected,
                        "used idx \(start) + \(batch), used_event \(usedEvent)")
            }
        }
    }

    @Test("with EVENT_IDX, consecutive batches each compare against the previous publish")
    func eventIndexBatches() throws {
        let driver = memory.makeDriver(size: 16, eventIndex: true)
        let layout = driver.layout
        memory.store(UInt16(65533), at: usedIndexAddress(layout))
        var queue = try SplitQueue(layout: layout, memory: memory.map, nextAvail: 0, eventIndex: true)
        memory.store(UInt16(2), at: usedEventAddress(layout))  // interrupt once element 2 (after the wrap) is used
        func publish(_ count: Int) -> Bool {
            for _ in 0..<count { queue.addUsed(head: 0, length: 1, writer: memory.writer) }
            return queue.publishUsed(writer: memory.writer)
        }
        #expect(publish(2) == false)  // 65533, 65534
        #expect(publish(3) == false)  // 65535, 0, 1
        #expect(publish(2) == true)   // 2, 3: crosses used_event 2
        #expect(publish(1) == false)  // 4: already signalled past 2
        #expect(publish(0) == false)
        memory.store(UInt16(5), at: usedEventAddress(layout))
        #expect(publish(1) == true)   // 5
        #expect(queue.guestUsedIndex == 6)
    }

    @Test("with EVENT_IDX, a driver that reaps as it goes gets one interrupt per batch")
    func eventIndexWithDriver() throws {
        var (driver, queue) = try makePair(size: 16, eventIndex: true)
        for round in 0..<40 {  // 40 rounds × 3 requests wraps a size-16 ring several times
            var heads: [UInt16] = []
            for _ in 0..<3 { heads.append(try add(&driver, readRequest(dataBytes: 16))) }
            while let head = try queue.popAvailable() {
                queue.addUsed(head: head, length: 17, writer: memory.writer)
            }
            #expect(queue.publishUsed(writer: memory.writer) == true, "round \(round)")
            #expect(queue.publishUsed(writer: memory.writer) == false)
            var reaped: [UInt16] = []
            while let element = driver.popUsed() { reaped.append(element.head) }
            #expect(reaped == heads)
        }
    }

    // MARK: - Kick suppression

    @Test("enableNotifications with EVENT_IDX writes avail_event and reports a race")
    func enableNotificationsEventIndex() throws {
        var (driver, queue) = try makePair(size: 16, eventIndex: true)
        _ = try add(&driver, readRequest())
        #expect(driver.needsKick() == true, "avail_event starts at 0")
        #expect(try queue.popAvailable() != nil)
        #expect(queue.enableNotifications() == false)
        #expect(memory.load(UInt16.self, at: availEventAddress(queue.layout)) == 1)

        _ = try add(&driver, readRequest())
        #expect(driver.needsKick() == true, "publishing entry 1 crosses avail_event 1")
        _ = try add(&driver, readRequest())
        #expect(driver.needsKick() == false, "already kicked past avail_event")
        #expect(try queue.popAvailable() != nil)
        #expect(try queue.popAvailable() != nil)
        // The driver publishes between the device's last pop and its re-enable: no kick is
        // asked for (avail_event is stale), so the device must notice by itself.
        _ = try add(&driver, readRequest())
        #expect(driver.needsKick() == false)
        #expect(queue.enableNotifications() == true, "a request arrived meanwhile")
        #expect(memory.load(UInt16.self, at: availEventAddress(queue.layout)) == 3)
        #expect(try queue.popAvailable() != nil)
        #expect(try queue.popAvailable() == nil)
        #expect(queue.enableNotifications() == false)
        #expect(memory.load(UInt16.self, at: availEventAddress(queue.layout)) == 4)
        _ = try add(&driver, readRequest())
        #expect(driver.needsKick() == true)
    }

    @Test("without EVENT_IDX, NO_NOTIFY is set by disable and cleared by enable")
    func notificationsFlag() throws {
        var (driver, queue) = try makePair(size: 16, eventIndex: false)
        queue.disableNotifications()
        #expect(memory.load(UInt16.self, at: usedFlagsAddress(queue.layout)) == 1)
        _ = driver.addChain(readRequest())
        #expect(driver.needsKick() == false)
        #expect(queue.enableNotifications() == true, "the request published while disabled")
        #expect(memory.load(UInt16.self, at: usedFlagsAddress(queue.layout)) == 0)
        _ = try queue.popAvailable()
        #expect(queue.enableNotifications() == false)
        _ = driver.addChain(readRequest())
        #expect(driver.needsKick() == true)
    }

    // MARK: - Hostile avail ring

    @Test("avail->idx more than a queue ahead is availIndexTooFar; exactly a queue is fine",
          arguments: [UInt16(0), 65530])
    func availIndexTooFar(start: UInt16) throws {
        var driver = memory.makeDriver(size: 8, eventIndex: false)
        var queue = try SplitQueue(layout: driver.layout, memory: memory.map, nextAvail: start, eventIndex: false)
        driver.forceAvailIndex(start &+ 9)
        #expect(throws: VirtqueueError.availIndexTooFar(availIndex: start &+ 9, nextAvail: start)) {
            try queue.popAvailable()
        }
        driver.forceAvailIndex(start &+ 0xffff)  // "behind" us is also a jump of 65535
        #expect(throws: VirtqueueError.availIndexTooFar(availIndex: start &+ 0xffff, nextAvail: start)) {
            try queue.popAvailable()
        }
        driver.forceAvailIndex(start &+ 8)
        for _ in 0..<8 { #expect(try queue.popAvailable() == 0) }
        #expect(try queue.popAvailable() == nil)
    }

    @Test("a head past the table in the avail ring is descriptorIndexOutOfRange")
    func badHead() throws {
        var (driver, queue) = try makePair(size: 8, eventIndex: false)
        driver.publish(head: 8)
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(8)) { try queue.popAvailable() }
        driver.publish(head: 0xffff)
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(0xffff)) { try queue.popAvailable() }
    }

    // MARK: - Layout validation

    func layoutError(_ layout: SplitQueueLayout) -> VirtqueueError? {
        do {
            _ = try SplitQueue(layout: layout, memory: memory.map, nextAvail: 0, eventIndex: true)
            return nil
        } catch {
            return error
        }
    }

    static func isInvalidLayout(_ error: VirtqueueError?) -> Bool {
        if case .invalidRingLayout = error { return true }
        return false
    }

    static func isOutOfRange(_ error: VirtqueueError?) -> Bool {
        if case .memory(.outOfRange) = error { return true }
        return false
    }

    @Test("queue sizes that are not a power of two, or too large, are refused",
          arguments: [UInt16(0), 3, 6, 100, 1023, 2048, 0x8000])
    func badSizes(_ size: UInt16) {
        let layout = SplitQueueLayout(size: size, descriptorTable: GuestAddress(0xc0000),
                                      availRing: GuestAddress(0xd0000), usedRing: GuestAddress(0xe0000))
        #expect(Self.isInvalidLayout(layoutError(layout)), "size \(size)")
    }

    @Test("power-of-two sizes up to 1024 are accepted", arguments: [UInt16(1), 2, 128, 256, 1024])
    func goodSizes(_ size: UInt16) throws {
        let layout = memory.allocateQueueLayout(size: size, inRegion: 1)
        #expect(layoutError(layout) == nil)
    }

    @Test("misaligned ring addresses are refused (desc 16, avail 2, used 4)")
    func misaligned() {
        let good = SplitQueueDriver.layout(size: 8, base: GuestAddress(0xc0000))
        #expect(layoutError(good) == nil)
        var layout = good
        layout.descriptorTable = GuestAddress(good.descriptorTable.rawValue + 8)
        #expect(Self.isInvalidLayout(layoutError(layout)))
        layout = good
        layout.availRing = GuestAddress(good.availRing.rawValue + 1)
        #expect(Self.isInvalidLayout(layoutError(layout)))
        layout = good
        layout.usedRing = GuestAddress(good.usedRing.rawValue + 2)
        #expect(Self.isInvalidLayout(layoutError(layout)))
    }

    @Test("rings outside guest memory, or straddling a region end, are refused")
    func ringsOutsideMemory() {
        let good = SplitQueueDriver.layout(size: 8, base: GuestAddress(0xc0000))
        var layout = good
        layout.descriptorTable = GuestAddress(0xa0000)  // in the hole
        #expect(Self.isOutOfRange(layoutError(layout)))
        layout = good
        layout.descriptorTable = GuestAddress(0xa0000 - 64)  // 128-byte table runs into the hole
        #expect(Self.isOutOfRange(layoutError(layout)))
        layout = good
        layout.availRing = GuestAddress(0x1c0000 - 8)  // runs past the end of memory
        #expect(Self.isOutOfRange(layoutError(layout)))
        layout = good
        layout.usedRing = GuestAddress(1 << 40)
        #expect(Self.isOutOfRange(layoutError(layout)))
    }

    @Test("a ring straddling two adjacent regions is refused: rings must sit in one region")
    func ringAcrossAdjacentRegions() throws {
        let memory = try FakeGuestMemory(regions: [(base: 0, size: 0x10000), (base: 0x10000, size: 0x10000)])
        let layout = SplitQueueLayout(size: 8, descriptorTable: GuestAddress(0x10000 - 64),
                                      availRing: GuestAddress(0x12000), usedRing: GuestAddress(0x13000))
        #expect(throws: VirtqueueError.self) {
            _ = try SplitQueue(layout: layout, memory: memory.map, nextAvail: 0, eventIndex: false)
        }
    }
}
