import Glibc
import LinuxSystem
import Logging
import RemoteMem
import Synchronization

/// The UDP side of a memory server (`memx-server --transport udp`; docs/PROTOCOL.md, "UDP
/// transport"): one socket on the TCP port's number and one thread serving every UDP client.
///
/// Each datagram is one request frame. A HELLO starts (or, repeated, re-answers) the session of
/// its peer address; every other request is looked up in that session's reply cache first, so
/// a duplicate is answered with the reply already sent and never applied twice. Datagrams from
/// an address without a session, malformed or stale ones are dropped: to a client that is the
/// same as a lost datagram, which its retransmission timer handles.
///
/// Sessions end when a reply closes them (a failed AUTH, a foreign version), when a request is
/// malformed, when they are not authenticated within `handshakeTimeoutMillis`, or after
/// `sessionIdleMillis` without a datagram. A client whose session ended gets no replies, times
/// out and says HELLO again.
final class DatagramListener: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `sessions` and the buffers are confined to the listener
    // thread; `socket` is thread-safe; `thread` is set before and read after that thread runs.
    let socket: UDPSocket
    private let handler: RequestHandler
    private let counters: ServerCounters
    private let logger: Logger
    private var sessions: [DatagramPeer: DatagramSession] = [:]
    private var thread: OSThread?
    private let stopping = Atomic<Bool>(false)
    /// Duplicates answered from a reply cache, and datagrams dropped (for tests and metrics).
    let duplicatesAnswered = Atomic<UInt64>(0)
    let datagramsDropped = Atomic<UInt64>(0)

    /// Requests taken per recvmmsg, and replies sent per sendmmsg.
    static let batchMax = 32
    /// Non-blocking receives that may extend a batch before its replies are sent.
    static let coalesceRounds = 4
    /// Replies waiting for the next sendmmsg (listener thread only).
    private let replies = DatagramBatch(capacity: batchMax, datagramBytes: DatagramFraming.datagramBytesMax)

    /// A session with no datagram for this long is forgotten (a client that went away).
    static let sessionIdleMillis = 600_000

    init(address: TCPAddress, handler: RequestHandler, counters: ServerCounters, logger: Logger) throws(Errno) {
        socket = try UDPSocket(binding: address)
        try socket.setReceiveTimeout(millis: 250)
        self.handler = handler
        self.counters = counters
        self.logger = logger
    }

    func start() throws(Errno) {
        thread = try OSThread(name: "memx-udp") { [self] in run() }
    }

    func stop() {
        stopping.store(true, ordering: .releasing)
        socket.shutdown()
        thread?.join()
    }

    private func run() {
        // Requests are received up to `batchMax` per recvmmsg and their replies sent per
        // sendmmsg, once the batch is handled (or when the send batch is full).
        let received = DatagramBatch(capacity: Self.batchMax, datagramBytes: DatagramFraming.datagramBytesMax)
        // The handler's READ buffer (it wants room for a whole `pagesPerRequestMax` READ) behind
        // room for a reply header, so a reply is built contiguously.
        let reply = UnsafeMutableRawBufferPointer.allocate(
            byteCount: FrameHeader.sizeBytes + max(WireLimits.payloadBytesMax, Int(WireLimits.pagesPerRequestMax) * WireLimits.pageSize),
            alignment: 8)
        defer {
            reply.deallocate()
            for _ in sessions { counters.connectionClosed() }
            sessions = [:]
        }
        var lastSweep = ContinuousClock.now
        while !stopping.load(ordering: .acquiring) {
            do {
                var count = try socket.receive(received)
                // Whatever arrived while a batch was handled joins it (up to `coalesceRounds`
                // batches) before the replies go: a client's page parts come in a burst, and
                // one send of all their replies wakes it once rather than per datagram.
                for round in 1...Self.coalesceRounds {
                    for i in 0..<count where received.datagram(i).count > 0 {
                        serve(received.datagram(i), from: received.peer(i), replyBuffer: reply)
                    }
                    guard round < Self.coalesceRounds, replies.count < replies.capacity,
                          let more = try? socket.receive(received, wait: false), more > 0 else { break }
                    count = more
                }
                socket.send(replies)
            } catch {
                if error != .wouldBlock && error != Errno(rawValue: ECONNREFUSED) && !stopping.load(ordering: .acquiring) {
                    logger.warning("UDP receive failed: \(error)")
                }
            }
            if ContinuousClock.now - lastSweep > .seconds(1) {
                sweep()
                lastSweep = .now
            }
        }
    }

    private func drop() { datagramsDropped.add(1, ordering: .relaxed) }

    /// Answers one datagram (or drops it).
    private func serve(_ bytes: UnsafeRawBufferPointer, from peer: DatagramPeer, replyBuffer: UnsafeMutableRawBufferPointer) {
        guard bytes.count >= FrameHeader.sizeBytes else { return drop() }
        let header = FrameHeader.decode(bytes)
        guard Int(header.length) == bytes.count - FrameHeader.sizeBytes else { return drop() }
        let payload = UnsafeRawBufferPointer(rebasing: bytes[FrameHeader.sizeBytes...])
        if header.opcodeValue == .hello {
            return hello(header, payload: payload, from: peer, replyBuffer: replyBuffer)
        }
        guard let session = sessions[peer] else { return drop() }
        session.lastHeard = .now
        switch session.replies.lookup(header.requestID) {
        case .stale:
            return drop()
        case .duplicate:
            duplicatesAnswered.add(1, ordering: .relaxed)
            session.replies.withReply(header.requestID) { send($0, to: peer) }
            return
        case .fresh:
            break
        }
        var limit = FrameDecoder.requestLimit(header)
        if handler.clusterKey != nil && !session.handshake.authenticated { limit = min(limit, WireLimits.smallPayloadBytesMax) }
        guard payload.count <= limit else { return end(peer, "\(header.opcode): a payload of \(payload.count) bytes over the limit") }
        let answer: Reply
        do {
            answer = try respond(header, payload: payload, session: session, replyBuffer: replyBuffer)
        } catch {
            return end(peer, "\(Opcode(rawValue: header.opcode).map(String.init(describing:)) ?? "opcode \(header.opcode)"): \(error)")
        }
        let wire = UnsafeRawBufferPointer(start: replyBuffer.baseAddress, count: answer.wireBytes)
        session.replies.store(header.requestID, reply: wire)
        send(wire, to: peer)
        if answer.closesConnection { end(peer, "its \(header.opcodeValue.map(String.init(describing:)) ?? "request") was answered with status \(answer.header.status), which ends it") }
    }

    /// Handles a request and lays its reply out in `replyBuffer` (header, then payload).
    private func respond(_ header: FrameHeader, payload: UnsafeRawBufferPointer, session: DatagramSession,
                         replyBuffer: UnsafeMutableRawBufferPointer) throws(FrameError) -> Reply {
        let pages = UnsafeMutableRawBufferPointer(rebasing: replyBuffer[FrameHeader.sizeBytes...])
        var answer: Reply
        if header.opcodeValue == .read && Int(header.pageCount) * WireLimits.pageSize > DatagramFraming.payloadBytesMax {
            // A READ reply must fit one datagram: the client splits larger ones.
            answer = .status(.invalid, to: header)
        } else {
            answer = try handler.handle(header, payload: payload, pageBuffer: pages, handshake: &session.handshake)
        }
        if answer.wireBytes > DatagramFraming.datagramBytesMax {
            // Control data over one datagram (a group table over ~64 KiB): use TCP for it.
            logger.warning("\(Opcode(rawValue: header.opcode).map(String.init(describing:)) ?? "opcode \(header.opcode)") reply of \(answer.wireBytes) bytes does not fit a UDP datagram; answered INVALID")
            answer = .status(.invalid, to: header)
        }
        answer.header.encode(into: UnsafeMutableRawBufferPointer(rebasing: replyBuffer[..<FrameHeader.sizeBytes]))
        if case .bytes(let bytes) = answer.payload, !bytes.isEmpty {
            bytes.withUnsafeBytes { pages.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }
        return answer
    }

    /// A HELLO: the same one again is answered as before; another starts a new session.
    private func hello(_ header: FrameHeader, payload: UnsafeRawBufferPointer, from peer: DatagramPeer,
                       replyBuffer: UnsafeMutableRawBufferPointer) {
        if let session = sessions[peer], session.helloRequest.elementsEqual(payload) {
            session.lastHeard = .now
            duplicatesAnswered.add(1, ordering: .relaxed)
            return session.helloReply.withUnsafeBytes { send($0, to: peer) }
        }
        guard payload.count <= WireLimits.smallPayloadBytesMax else { return drop() }
        if sessions[peer] != nil { end(peer, nil) }
        guard sessions.count < MemoryServerLimits.connectionsMax else {
            logger.warning("UDP HELLO from \(peer) dropped: \(MemoryServerLimits.connectionsMax) sessions already open")
            return drop()
        }
        let session: DatagramSession
        do {
            session = try DatagramSession(helloRequest: Array(payload))
        } catch {
            logger.error("UDP HELLO from \(peer) dropped: cannot map its reply cache: \(error)")
            return drop()
        }
        let answer: Reply
        do {
            answer = try respond(header, payload: payload, session: session, replyBuffer: replyBuffer)
        } catch {
            return drop()
        }
        session.helloReply = Array(UnsafeRawBufferPointer(start: replyBuffer.baseAddress, count: answer.wireBytes))
        if !answer.closesConnection {
            sessions[peer] = session
            counters.connectionOpened()
            logger.debug("UDP session open", metadata: ["peer": .string(peer.description)])
        }
        session.helloReply.withUnsafeBytes { send($0, to: peer) }
    }

    /// Queues a reply (copied into the send batch); sends the batch when it is full.
    private func send(_ bytes: UnsafeRawBufferPointer, to peer: DatagramPeer) {
        let room = replies.room(replies.count)
        // SAFETY: every reply is at most `datagramBytesMax`, the size of a room.
        room.copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        replies.append(head: UnsafeRawBufferPointer(start: room, count: bytes.count), to: peer)
        if replies.isFull { socket.send(replies) }
    }

    /// Forgets `peer`'s session (logging `why`, if given).
    private func end(_ peer: DatagramPeer, _ why: String?) {
        guard sessions.removeValue(forKey: peer) != nil else { return }
        counters.connectionClosed()
        if let why { logger.warning("UDP session of \(peer) ended: \(why)") }
    }

    /// Ends sessions not authenticated in time, and idle ones.
    private func sweep() {
        let now = ContinuousClock.now
        for (peer, session) in sessions {
            if !session.handshake.authenticated && now - session.started > .milliseconds(MemoryServerLimits.handshakeTimeoutMillis) {
                end(peer, "not authenticated within \(MemoryServerLimits.handshakeTimeoutMillis) ms")
            } else if now - session.lastHeard > .milliseconds(Self.sessionIdleMillis) {
                end(peer, nil)
            }
        }
    }
}
