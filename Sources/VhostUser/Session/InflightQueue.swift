import GuestMemory

/// One queue's part of the inflight tracking region (vhost-user spec, "Inflight I/O tracking",
/// split virtqueues), which QEMU keeps across a backend crash and hands back with
/// SET_INFLIGHT_FD so the restarted backend can resubmit what was in flight.
///
/// Layout: `features u64, version u16, desc_num u16, last_batch_head u16, used_idx u16`, then
/// `desc_num` entries of `{inflight u8, padding[5], next u16, counter u64}`.
public struct InflightQueue: Sendable {
    static let headerBytes = 16
    static let entryBytes = 16
    /// Bytes one queue's region takes, 64-byte aligned (as libvhost-user lays it out).
    public static func regionBytes(queueSize: UInt16) -> Int {
        (headerBytes + entryBytes * Int(queueSize) + 63) & ~63
    }

    let memory: RingMemory
    public let queueSize: UInt16

    public init?(area: SharedMemoryArea, queueIndex: Int, queueSize: UInt16) {
        let bytes = Self.regionBytes(queueSize: queueSize)
        guard let window = area.window(offset: queueIndex * bytes, length: bytes) else { return nil }
        memory = window
        self.queueSize = queueSize
    }

    var version: UInt16 { memory.loadU16(8) }
    var lastBatchHead: UInt16 { memory.loadU16(12) }
    public var usedIndex: UInt16 { memory.loadU16(14) }
    private func entry(_ head: UInt16) -> Int { Self.headerBytes + Self.entryBytes * Int(head) }
    func isInflight(_ head: UInt16) -> Bool { memory.loadU8(entry(head)) == 1 }
    func counter(_ head: UInt16) -> UInt64 { memory.loadU64(entry(head) + 8) }

    /// What `recover` found: the heads to resubmit (oldest first), and where the avail ring
    /// must resume.
    public struct Recovery: Sendable {
        public var resubmit: [UInt16]
        public var nextAvail: UInt16
        public var nextCounter: UInt64
    }

    /// Prepares the region for a starting ring. A fresh region (version 0) is initialised and
    /// the ring resumes at `base` (SET_VRING_BASE).
    /// After a reconnect, the last batch is reconciled with `guestUsedIndex` (entries whose
    /// completion reached the used ring are cleared) and the still-inflight heads are returned
    /// in submission order. The avail ring resumes after the requests already taken from it:
    /// `used_idx + inflight count` (libvhost-user `vu_check_queue_inflights`).
    public func recover(guestUsedIndex: UInt16, base: UInt16) -> Recovery {
        if version == 0 {
            memory.zero()
            memory.storeU16(8, 1)
            memory.storeU16(10, queueSize)
            memory.storeU16(14, guestUsedIndex)
            return Recovery(resubmit: [], nextAvail: base, nextCounter: 1)
        }
        let committed = guestUsedIndex &- usedIndex
        if committed != 0 {
            // Completions of the last batch reached used->idx before the crash: clear them.
            var head = lastBatchHead
            var left = min(Int(committed), Int(queueSize))
            while left > 0, head < queueSize {
                memory.storeU8(entry(head), 0)
                head = memory.loadU16(entry(head) + 6)
                left -= 1
            }
            memory.storeU16(14, guestUsedIndex)
        }
        var pending: [(counter: UInt64, head: UInt16)] = []
        var maxCounter: UInt64 = 0
        for head in 0..<queueSize {
            maxCounter = max(maxCounter, counter(head))
            if isInflight(head) { pending.append((counter(head), head)) }
        }
        pending.sort { $0.counter < $1.counter }
        return Recovery(resubmit: pending.map(\.head), nextAvail: guestUsedIndex &+ UInt16(truncatingIfNeeded: pending.count),
                        nextCounter: maxCounter + 1)
    }

    /// Records that `head` was taken from the avail ring (before any work on it).
    @inline(__always)
    public func markSubmitted(_ head: UInt16, counter: UInt64) {
        memory.storeU64(entry(head) + 8, counter)
        RingMemory.releaseFence()
        memory.storeU8(entry(head), 1)
    }

    /// Links `head` into the batch being completed (before `used->idx` is published).
    @inline(__always)
    public func linkIntoBatch(_ head: UInt16, previous: UInt16?) {
        memory.storeU16(entry(head) + 6, previous ?? queueSize)
    }

    /// Sets the batch list head (before `used->idx` is published).
    @inline(__always)
    public func setLastBatchHead(_ head: UInt16) {
        RingMemory.releaseFence()
        memory.storeU16(12, head)
    }

    /// Clears `head` after its completion was published.
    @inline(__always)
    public func markCompleted(_ head: UInt16) { memory.storeU8(entry(head), 0) }

    /// Records the published `used->idx` (after the batch's entries were cleared).
    @inline(__always)
    public func setUsedIndex(_ index: UInt16) {
        RingMemory.releaseFence()
        memory.storeU16(14, index)
    }
}
