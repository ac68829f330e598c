import CMemxShims
import Glibc

/// Preallocated room for one batched `UDPSocket.receive(_:)` (recvmmsg) or `send(_:)`
/// (sendmmsg) call: up to `capacity` datagrams of up to `datagramBytes` each, with their peers.
/// Reused call after call, so batching allocates nothing per datagram. Confined to one thread
/// at a time (the owner's).
public final class DatagramBatch: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): used by one thread at a time, which its owner guarantees
    // (the server's UDP thread; a client's receiver; a client's senders under its lock).
    public let capacity: Int
    public let datagramBytes: Int
    /// `capacity` × `datagramBytes` bytes: received datagrams, or data to send.
    public let storage: UnsafeMutableRawPointer
    let buffers: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    let lengths: UnsafeMutablePointer<Int>
    let peers: UnsafeMutablePointer<sockaddr_storage>
    let peerLengths: UnsafeMutablePointer<UInt32>
    let heads: UnsafeMutablePointer<UnsafeRawPointer?>
    let headLengths: UnsafeMutablePointer<Int>
    let bodies: UnsafeMutablePointer<UnsafeRawPointer?>
    let bodyLengths: UnsafeMutablePointer<Int>
    /// Datagrams received by the last receive, or queued for the next send.
    public internal(set) var count = 0
    var hasPeers = false

    public init(capacity: Int, datagramBytes: Int) {
        precondition(capacity > 0 && capacity <= Int(MEMX_UDP_BATCH_MAX))
        self.capacity = capacity
        self.datagramBytes = datagramBytes
        storage = .allocate(byteCount: capacity * datagramBytes, alignment: 4096)
        buffers = .allocate(capacity: capacity)
        for i in 0..<capacity { buffers[i] = storage + i * datagramBytes }
        lengths = .allocate(capacity: capacity)
        peers = .allocate(capacity: capacity)
        peerLengths = .allocate(capacity: capacity)
        heads = .allocate(capacity: capacity)
        headLengths = .allocate(capacity: capacity)
        bodies = .allocate(capacity: capacity)
        bodyLengths = .allocate(capacity: capacity)
    }

    deinit {
        storage.deallocate()
        buffers.deallocate()
        lengths.deallocate()
        peers.deallocate()
        peerLengths.deallocate()
        heads.deallocate()
        headLengths.deallocate()
        bodies.deallocate()
        bodyLengths.deallocate()
    }

    /// Received datagram `i`.
    public func datagram(_ i: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + i * datagramBytes, count: lengths[i])
    }

    /// The sender of received datagram `i`.
    public func peer(_ i: Int) -> DatagramPeer {
        var peer = DatagramPeer()
        peer.storage = peers[i]
        peer.length = peerLengths[i]
        return peer
    }

    /// Room `i` of `storage`, to build a datagram to send in.
    public func room(_ i: Int) -> UnsafeMutableRawPointer { storage + i * datagramBytes }

    public var isFull: Bool { count == capacity }

    /// Forgets every queued datagram (their link broke: they fail with it, unsent).
    public func removeAll() {
        count = 0
        hasPeers = false
    }

    /// Queues a datagram of `head` then `body` (to `peer`, or the connected peer if nil). The
    /// bytes must stay valid until the batch is sent.
    public func append(head: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                       to peer: DatagramPeer? = nil) {
        precondition(count < capacity, "datagram batch full")
        heads[count] = head.baseAddress
        headLengths[count] = head.count
        bodies[count] = body.baseAddress
        bodyLengths[count] = body.count
        if let peer {
            peers[count] = peer.storage
            peerLengths[count] = peer.length
            hasPeers = true
        }
        count += 1
    }
}

extension UDPSocket {
    /// Receives up to `batch.capacity` datagrams with one recvmmsg, blocking (up to the receive
    /// timeout) for the first only, or not at all with `wait` false (then `.wouldBlock` when
    /// none is queued). Returns how many (also `batch.count`).
    public func receive(_ batch: DatagramBatch, wait: Bool = true) throws(Errno) -> Int {
        // SAFETY: every array has `capacity` entries and every buffer `datagramBytes` bytes.
        let n = memx_udp_receive_batch(rawValue, batch.buffers, batch.datagramBytes, UInt32(batch.capacity), batch.lengths,
                                       batch.peers, MemoryLayout<sockaddr_storage>.size, batch.peerLengths, wait ? 0 : 1)
        if n < 0 {
            batch.count = 0
            throw Errno.current
        }
        batch.count = Int(n)
        return Int(n)
    }

    /// Sends every datagram queued in `batch` with sendmmsg and empties it. A full socket
    /// buffer drops what did not fit, as the network would: the protocol retransmits.
    public func send(_ batch: DatagramBatch) {
        defer {
            batch.count = 0
            batch.hasPeers = false
        }
        guard batch.count > 0 else { return }
        _ = memx_udp_send_batch(rawValue, batch.heads, batch.headLengths, batch.bodies, batch.bodyLengths,
                                batch.hasPeers ? UnsafeRawPointer(batch.peers) : nil, MemoryLayout<sockaddr_storage>.size,
                                batch.peerLengths, UInt32(batch.count))
    }
}
