import GuestMemory
import LinuxSystem
import Testing
import VhostUser

/// The inflight region's bookkeeping (vhost-user spec, "Inflight I/O tracking"), without a
/// backend: what a restarted process must conclude from what its predecessor left.
@Suite("InflightQueue")
struct InflightQueueTests {
    let area: SharedMemoryArea
    let queue: InflightQueue

    init() throws {
        let bytes = InflightQueue.regionBytes(queueSize: 16) * 2
        area = try SharedMemoryArea(fd: MemFD.create(name: "inflight-test", size: bytes), size: UInt64(bytes), offset: 0)
        queue = try #require(InflightQueue(area: area, queueIndex: 1, queueSize: 16))
    }

    @Test("regions are 64-byte aligned and hold the header plus 16 bytes per descriptor")
    func sizes() {
        #expect(InflightQueue.regionBytes(queueSize: 128) == 2112)
        #expect(InflightQueue.regionBytes(queueSize: 1024) % 64 == 0)
        #expect(InflightQueue.regionBytes(queueSize: 1024) >= 16 + 16 * 1024)
        #expect(InflightQueue(area: area, queueIndex: 2, queueSize: 16) == nil)
    }

    @Test("a fresh region starts the ring at SET_VRING_BASE with nothing to resubmit")
    func fresh() {
        let recovery = queue.recover(guestUsedIndex: 7, base: 9)
        #expect(recovery.resubmit.isEmpty && recovery.nextAvail == 9)
        #expect(queue.usedIndex == 7)
    }

    @Test("after a crash: in-flight heads resubmitted oldest first; the avail ring resumes past them")
    func crashWithPending() {
        _ = queue.recover(guestUsedIndex: 100, base: 100)
        queue.markSubmitted(5, counter: 11)
        queue.markSubmitted(2, counter: 10)
        queue.markSubmitted(9, counter: 12)
        // 9 completed and was published (a batch of one).
        queue.linkIntoBatch(9, previous: nil)
        queue.setLastBatchHead(9)
        queue.markCompleted(9)
        queue.setUsedIndex(101)
        let recovery = queue.recover(guestUsedIndex: 101, base: 101)
        #expect(recovery.resubmit == [2, 5])
        #expect(recovery.nextAvail == 103)
        #expect(recovery.nextCounter == 13)
    }

    @Test("a crash after used->idx was published but before the batch was cleared: the batch is not resubmitted")
    func crashMidBatch() {
        _ = queue.recover(guestUsedIndex: 0, base: 0)
        for (i, head) in [UInt16(3), 4, 6].enumerated() { queue.markSubmitted(head, counter: UInt64(i + 1)) }
        // The batch {3, 4} reached the used ring (used->idx 0 → 2); the process died before
        // clearing their flags and recording used_idx.
        queue.linkIntoBatch(3, previous: nil)
        queue.linkIntoBatch(4, previous: 3)
        queue.setLastBatchHead(4)
        let recovery = queue.recover(guestUsedIndex: 2, base: 2)
        #expect(recovery.resubmit == [6])
        #expect(recovery.nextAvail == 3)
        #expect(queue.usedIndex == 2)
    }
}
