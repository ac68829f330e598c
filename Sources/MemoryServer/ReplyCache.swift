import LinuxSystem
import RemoteMem

/// The replies of one UDP session, kept so a duplicated or retransmitted request is answered
/// again without being applied again (docs/PROTOCOL.md, "UDP transport").
///
/// Bounded by construction: one entry per cache key (the request id's window slot and part,
/// `DatagramFraming.cacheKey`), 2 048 in all. A client has at most one request per key in
/// flight and its ids grow per key, so for a request with id `n` under a key whose entry holds
/// id `m`: `n == m` is a duplicate (answered from the entry), `n < m` a stale one the client no
/// longer waits for (dropped), `n > m` new (applied, and the entry replaced).
///
/// Entries hold a header and one page inline (a mapping of 2 048 × 4 160 bytes; only entries
/// used become resident); a larger reply (control data) is kept in an array.
final class ReplyCache {
    enum Lookup: Equatable {
        case fresh
        case duplicate
        case stale
    }

    static let entryBytes = FrameHeader.sizeBytes + WireLimits.pageSize + 24
    private let storage: MemoryReservation
    private let ids: UnsafeMutablePointer<UInt64>
    private let lengths: UnsafeMutablePointer<Int32>
    private var large: [Int: [UInt8]] = [:]

    init() throws(Errno) {
        storage = try MemoryReservation(length: DatagramFraming.cacheKeys * Self.entryBytes)
        ids = .allocate(capacity: DatagramFraming.cacheKeys)
        ids.initialize(repeating: 0, count: DatagramFraming.cacheKeys)
        lengths = .allocate(capacity: DatagramFraming.cacheKeys)
        lengths.initialize(repeating: 0, count: DatagramFraming.cacheKeys)
    }

    deinit {
        ids.deallocate()
        lengths.deallocate()
    }

    func lookup(_ requestID: UInt64) -> Lookup {
        let stored = ids[DatagramFraming.cacheKey(requestID)]
        if requestID == stored { return .duplicate }
        return requestID < stored ? .stale : .fresh
    }

    /// Records `reply` (header then payload, ≤ `DatagramFraming.datagramBytesMax`) as the answer
    /// to `requestID`.
    func store(_ requestID: UInt64, reply: UnsafeRawBufferPointer) {
        let key = DatagramFraming.cacheKey(requestID)
        ids[key] = requestID
        lengths[key] = Int32(reply.count)
        if reply.count <= Self.entryBytes {
            large[key] = nil
            // SAFETY: entry `key` is `entryBytes` long inside the mapping and holds `reply`.
            (storage.base + key * Self.entryBytes).copyMemory(from: reply.baseAddress!, byteCount: reply.count)
        } else {
            large[key] = Array(reply)
        }
    }

    /// Calls `body` with the reply stored for `requestID`'s key (a duplicate's answer).
    func withReply<T>(_ requestID: UInt64, _ body: (UnsafeRawBufferPointer) -> T) -> T {
        let key = DatagramFraming.cacheKey(requestID)
        if let bytes = large[key] { return bytes.withUnsafeBytes(body) }
        // SAFETY: the entry holds `lengths[key]` bytes written by `store`.
        return body(UnsafeRawBufferPointer(start: storage.base + key * Self.entryBytes, count: Int(lengths[key])))
    }
}
