import Glibc
import LinuxSystem

/// A `ServerConnection` over UDP (`--transport udp`; docs/PROTOCOL.md, "UDP transport"): the
/// same frames, one per datagram, made reliable by the protocol itself.
///
/// - Every request keeps its window slot until its reply: the reply is the acknowledgement.
///   A slot's request is sent again, part by part, until every part is answered, on a timer
///   from `LossControl` (smoothed RTT, doubled per retransmission), up to the request timeout,
///   which fails the request and resets the link as over TCP (new socket, new HELLO and AUTH).
/// - A READ or WRITE of several pages goes as one single-page datagram per page (part `i` has
///   page `page + i`, `pageCount` 1 and id `sequence·2¹³ | i·2⁸ | slot`); the request is done
///   when all its parts are. A WRITE part is re-sent from the caller's page, which stays valid
///   until the request is done, so nothing is copied.
/// - Replies may come in any order, twice, or for a request already done: a reply counts only
///   for a part still missing of the slot's current id; anything else is dropped.
/// - The window (requests in flight) is `LossControl.limit`: it halves on a retransmission
///   timeout and grows back by one per window of replies.
///
/// Threads: callers send their own datagrams (under the lock, so a retransmission never reads
/// a slot being reused); one receiver thread per link; one maintenance thread runs the timers
/// and reconnects.
final class DatagramConnection: @unchecked Sendable {
    // SAFETY: every mutable field, and every field of `slots` and `parts`, is guarded by
    // `lock`; sockets are thread-safe (`UDPSocket`).

    final class Link: @unchecked Sendable {
        // SAFETY: `broken`, `receiver` and `generation` are guarded by the connection's lock.
        let socket: UDPSocket
        let serverID: [UInt8]
        var generation: UInt64 = 0
        var broken = false
        var receiver: OSThread?
        init(socket: UDPSocket, serverID: [UInt8]) {
            self.socket = socket
            self.serverID = serverID
        }
    }

    /// What a slot needs beyond `RequestSlot` to (re)send its request part by part.
    final class Parts {
        var header = FrameHeader(opcode: .ping, requestID: 0)
        var count = 1
        var missing: UInt32 = 0
        var split = false
        let sources: UnsafeMutablePointer<UnsafeMutableRawPointer>
        var sends = false
        var payload: [UInt8] = []
        var status: UInt16 = 0
        var sentAt: UInt64 = 0
        var retransmitAt: UInt64 = 0
        var rto: UInt64 = 0
        var retransmitted = false
        init() { sources = .allocate(capacity: Int(WireLimits.pagesPerRequestMax)) }
        deinit { sources.deallocate() }
    }

    let address: TCPAddress
    let options: ServerConnection.Options
    let serverID: [UInt8]

    private let lock = PosixLock()
    private let windowOpened = PosixCondition()
    private let maintenanceWake = PosixCondition()
    private let slots: [RequestSlot]
    private let parts: [Parts]
    private var freeSlots: [Int]
    private var inFlight = 0
    private var asyncOutstanding = 0
    private var loss = LossControl()
    private var link: Link?
    private var state: ServerConnection.State = .ready
    private var sequence: UInt64 = 1
    private var generation: UInt64 = 1
    private var backoffMillis = ClientLimits.reconnectBackoffMillisMin
    private var maintenance: OSThread?
    /// The page parts of one request, sent with one sendmmsg (used under `lock`).
    private let sendBatch = DatagramBatch(capacity: Int(WireLimits.pagesPerRequestMax), datagramBytes: 64)
    /// READ parts queued by `submit(deferSend: true)` until `sendDeferred` (used under `lock`):
    /// a queue thread's batch of reads leaves in one system call, as over TCP.
    private let deferred = DatagramBatch(capacity: 64, datagramBytes: 64)
    /// Replies dropped as duplicates or late (statistics).
    private(set) var duplicateReplies: UInt64 = 0

    /// The idle tick of the maintenance thread (no request in flight): the longest a first
    /// retransmission can be late.
    private static let idleTickNanos: UInt64 = 5_000_000
    /// How often a handshake datagram is sent again while no answer comes.
    private static let handshakeRetryMillis = 50

    init(address: TCPAddress, options: ServerConnection.Options) throws(RemoteMemError) {
        self.address = address
        self.options = options
        let first = try Self.handshake(address, options)
        first.generation = generation
        serverID = first.serverID
        slots = (0..<WireLimits.inFlightMax).map { RequestSlot(index: $0) }
        parts = (0..<WireLimits.inFlightMax).map { _ in Parts() }
        freeSlots = Array((0..<WireLimits.inFlightMax).reversed())
        link = first
        do {
            try startReceiver(first)
            maintenance = try OSThread(name: "memx-udp-timer") { [self] in maintain() }
        } catch {
            first.socket.shutdown()
            throw .unreachable(server: address.description, reason: "cannot start threads: \(error)")
        }
    }

    func close() {
        lock.lock()
        if state == .closed {
            lock.unlock()
            return
        }
        state = .closed
        if let link { breakLocked(link, error: .closed) }
        let receiver = link?.receiver
        link = nil
        maintenanceWake.broadcast()
        windowOpened.broadcast()
        let maintenance = self.maintenance
        lock.unlock()
        receiver?.join()
        maintenance?.join()
    }

    func retire(_ reason: String) {
        lock.withLock {
            guard state != .closed else { return }
            if case .replaced = state { return }
            let error = RemoteMemError.unreachable(server: address.description, reason: reason)
            if let link { breakLocked(link, error: error) }
            state = .replaced(reason)
            windowOpened.broadcast()
        }
    }

    var isConnected: Bool { lock.withLock { state == .ready } }

    /// Retransmissions since the connection was made (all links).
    var retransmissions: UInt64 { lock.withLock { loss.retransmissions } }

    // MARK: - Requests

    private var hasRoomLocked: Bool { !freeSlots.isEmpty && inFlight < loss.limit }

    func submit(_ header: FrameHeader, payload: UnsafeRawBufferPointer,
                sendingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                receivingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                waitForWindow: Bool, asyncRequest: AsyncRequest?, deferSend: Bool = false) throws(RemoteMemError) -> RequestTicket? {
        let opcode = header.opcodeValue ?? .ping
        guard payload.count <= DatagramFraming.payloadBytesMax else {
            throw .protocolViolation(server: address.description,
                                     reason: "a \(opcode) of \(payload.count) bytes does not fit one datagram (UDP transport)")
        }
        let deadline = MonotonicInstant.now.adding(milliseconds: options.requestTimeoutMillis)
        lock.lock()
        defer { lock.unlock() }
        if !waitForWindow && state == .ready && !hasRoomLocked { return nil }
        while state == .ready && !hasRoomLocked {
            if !windowOpened.wait(lock, until: deadline) && !hasRoomLocked {
                throw .timedOut(server: address.description, operation: "\(opcode) (in-flight window full)",
                                milliseconds: options.requestTimeoutMillis)
            }
        }
        guard state == .ready, let link else { throw unavailableErrorLocked() }
        let slot = slots[freeSlots.removeLast()]
        inFlight += 1
        let id = DatagramFraming.requestID(sequence: sequence, slot: slot.index, part: 0)
        sequence &+= 1
        slot.begin(id: id, generation: link.generation, opcode: opcode, pageCount: header.pageCount, deadline: deadline)
        if let receivingPages {
            slot.receivesPages = true
            slot.destinations.update(from: receivingPages.baseAddress!, count: receivingPages.count)
        }
        if let asyncRequest {
            asyncRequest.begin()
            slot.asyncRequest = asyncRequest
            asyncOutstanding += 1
        }
        let p = parts[slot.index]
        p.header = header
        p.header.requestID = id
        p.split = (opcode == .read || opcode == .write) && header.pageCount > DatagramFraming.pagesPerDatagram
        p.count = p.split ? Int(header.pageCount) : 1
        p.missing = p.count >= 32 ? UInt32.max : (UInt32(1) << UInt32(p.count)) - 1
        p.sends = sendingPages != nil
        if let sendingPages { p.sources.update(from: sendingPages.baseAddress!, count: sendingPages.count) }
        p.payload = payload.isEmpty ? [] : Array(payload)  // control requests only (page data is never copied)
        p.status = WireStatus.ok.rawValue
        p.retransmitted = false
        let now = MonotonicInstant.now.nanoseconds
        p.sentAt = now
        p.rto = loss.rtoNanos
        p.retransmitAt = now + p.rto
        if deferSend && p.payload.isEmpty && !p.sends {
            queueMissingLocked(p, into: deferred, on: link)
        } else {
            sendMissingLocked(p, on: link)
        }
        return RequestTicket(slot: slot.index, requestID: id)
    }

    func wait(_ ticket: RequestTicket) throws(RemoteMemError) -> ServerReply {
        let slot = slots[ticket.slot]
        lock.lock()
        precondition(slot.requestID == ticket.requestID && slot.state != .free, "ticket redeemed twice")
        // The maintenance thread enforces the deadline (it fails the slot and resets the link).
        while slot.state != .done { slot.completion.wait(lock) }
        let result: Result<ServerReply, RemoteMemError>
        if let error = slot.error {
            result = .failure(error)
        } else {
            result = .success(ServerReply(header: slot.reply!, payload: slot.payload))
        }
        slot.state = .free
        slot.payload = []
        freeSlots.append(slot.index)
        windowOpened.signal()
        lock.unlock()
        return try result.get()
    }

    // MARK: - Sending

    /// Sends the parts of the slot's request still missing (all of them on the first send)
    /// with one sendmmsg (lock held). A failed send is left to the retransmission timer, as a
    /// lost datagram would be.
    private func sendMissingLocked(_ p: Parts, on link: Link) {
        if !p.payload.isEmpty {
            // A control request: one datagram, its payload from the slot's copy.
            var header = p.header
            header.length = UInt32(p.payload.count)
            p.payload.withUnsafeBytes { transmit(header, body: $0, on: link) }
            return
        }
        queueMissingLocked(p, into: sendBatch, on: link)
        link.socket.send(sendBatch)
    }

    /// Queues the missing page parts of the slot's request in `batch` (lock held), sending the
    /// batch whenever it fills.
    private func queueMissingLocked(_ p: Parts, into batch: DatagramBatch, on link: Link) {
        for part in 0..<p.count where p.missing & (UInt32(1) << UInt32(part)) != 0 {
            var header = p.header
            header.requestID |= UInt64(part) << UInt64(DatagramFraming.slotBits)
            if p.split {
                header.page += UInt64(part)
                header.pageCount = 1
            }
            var body = UnsafeRawBufferPointer(start: nil, count: 0)
            if p.sends {
                // SAFETY: a WRITE's caller keeps its pages valid until the request is done;
                // an unsplit WRITE is of one page (`pagesPerDatagram`), so one source.
                body = UnsafeRawBufferPointer(start: p.sources[p.split ? part : 0],
                                              count: (p.split ? 1 : Int(header.pageCount)) * WireLimits.pageSize)
            }
            header.length = UInt32(body.count)
            let room = batch.room(batch.count)
            header.encode(into: UnsafeMutableRawBufferPointer(start: room, count: FrameHeader.sizeBytes))
            batch.append(head: UnsafeRawBufferPointer(start: room, count: FrameHeader.sizeBytes), body: body)
            if batch.isFull { link.socket.send(batch) }
        }
    }

    /// Sends the READs `submit(deferSend: true)` queued, with one sendmmsg.
    func sendDeferred() {
        lock.withLock {
            guard deferred.count > 0 else { return }
            guard state == .ready, let link, !link.broken else { return deferred.removeAll() }
            link.socket.send(deferred)
        }
    }

    /// One datagram: `header` then `body`, the header encoded on the stack.
    private func transmit(_ header: FrameHeader, body: UnsafeRawBufferPointer, on link: Link) {
        withUnsafeTemporaryAllocation(byteCount: FrameHeader.sizeBytes, alignment: 8) { bytes in
            header.encode(into: bytes)
            try? link.socket.send(UnsafeRawBufferPointer(bytes), body)
        }
    }

    // MARK: - Receiving

    private func startReceiver(_ link: Link) throws(Errno) {
        link.receiver = try OSThread(name: "memx-udp-rx-\(address.port)") { [self] in receive(on: link) }
    }

    private func receive(on link: Link) {
        // Up to a window's worth of replies per recvmmsg, delivered under one lock acquisition.
        let batch = DatagramBatch(capacity: Int(WireLimits.pagesPerRequestMax), datagramBytes: DatagramFraming.datagramBytesMax)
        while true {
            do {
                _ = try link.socket.receive(batch)
            } catch {
                if error == .wouldBlock || error == Errno(rawValue: ECONNREFUSED) {
                    if lock.withLock({ link.broken }) { return }
                    continue
                }
                return lock.withLock {
                    breakLocked(link, error: .connectionLost(server: address.description, reason: "receive failed: \(error)"))
                }
            }
            let goOn = lock.withLock { () -> Bool in
                if link.broken { return false }
                for i in 0..<batch.count {
                    let datagram = batch.datagram(i)
                    guard datagram.count >= FrameHeader.sizeBytes else { continue }  // 0 bytes: shut down (checked above)
                    let header = FrameHeader.decode(datagram)
                    guard Int(header.length) == datagram.count - FrameHeader.sizeBytes else { continue }  // malformed: as if lost
                    if !deliverLocked(header, body: UnsafeRawBufferPointer(rebasing: datagram[FrameHeader.sizeBytes...]), link: link) {
                        return false
                    }
                }
                return true
            }
            if !goOn { return }
        }
    }

    /// Takes one reply (lock held). False once the link is broken (the receiver ends).
    private func deliverLocked(_ header: FrameHeader, body: UnsafeRawBufferPointer, link: Link) -> Bool {
        if link.broken { return false }
        let index = Int(header.requestID & 0xFF)
        let part = Int(header.requestID >> UInt64(DatagramFraming.slotBits) & 0x1F)
        let baseID = header.requestID & ~(UInt64(0x1F) << UInt64(DatagramFraming.slotBits))
        guard index < slots.count else { duplicateReplies += 1; return true }
        let slot = slots[index]
        let p = parts[index]
        guard slot.state == .waiting, slot.linkGeneration == link.generation, slot.requestID == baseID,
              part < p.count, p.missing & (UInt32(1) << UInt32(part)) != 0, header.opcode == slot.opcode.rawValue
        else {
            duplicateReplies += 1
            return true
        }
        if header.status != WireStatus.ok.rawValue && p.status == WireStatus.ok.rawValue { p.status = header.status }
        if slot.receivesPages && header.status == WireStatus.ok.rawValue {
            let pages = p.split ? 1 : Int(slot.pageCount)
            guard body.count == pages * WireLimits.pageSize else {
                slot.error = .protocolViolation(server: address.description,
                                                reason: "READ of \(pages) pages answered with \(body.count) bytes")
                finishLocked(slot)
                return true
            }
            for i in 0..<pages {
                // SAFETY: the caller registered one 4 KiB destination per page, valid until the
                // request is done; the slot is still waiting (checked above, under the lock).
                slot.destinations[p.split ? part : i].copyMemory(from: body.baseAddress! + i * WireLimits.pageSize,
                                                                  byteCount: WireLimits.pageSize)
            }
        } else if !body.isEmpty && !slot.receivesPages {
            slot.payload = Array(body)
        }
        p.missing &= ~(UInt32(1) << UInt32(part))
        if p.missing == 0 {
            var reply = header
            reply.requestID = slot.requestID
            reply.status = p.status
            reply.page = p.header.page
            reply.pageCount = p.header.pageCount
            slot.reply = reply
            loss.acknowledged(sampleNanos: p.retransmitted ? nil : MonotonicInstant.now.nanoseconds &- p.sentAt)
            finishLocked(slot)
        }
        return true
    }

    /// Completes a waiting slot (lock held).
    private func finishLocked(_ slot: RequestSlot) {
        inFlight -= 1
        if slot.finish() {
            asyncOutstanding -= 1
            freeSlots.append(slot.index)
        }
        windowOpened.signal()
    }

    // MARK: - Timers, breaking and reconnecting

    private func breakLocked(_ link: Link, error: RemoteMemError) {
        guard !link.broken else { return }
        link.broken = true
        deferred.removeAll()
        link.socket.shutdown()
        for slot in slots where slot.state == .waiting && slot.linkGeneration == link.generation {
            if slot.error == nil { slot.error = error }
            finishLocked(slot)
        }
        if state == .ready, self.link === link {
            state = .broken(error.description)
            maintenanceWake.signal()
        }
        windowOpened.broadcast()
    }

    private func unavailableErrorLocked() -> RemoteMemError {
        switch state {
        case .closed: .closed
        case .broken(let reason): .unreachable(server: address.description, reason: "\(reason); reconnecting")
        case .replaced(let reason): .unreachable(server: address.description, reason: reason)
        case .ready: .unreachable(server: address.description, reason: "not connected")
        }
    }

    /// Retransmits parts whose timer expired and fails requests past their deadline (lock
    /// held); returns when the next timer is due.
    private func runTimersLocked(now: UInt64) -> UInt64 {
        var next = now + Self.idleTickNanos
        guard let link, !link.broken, inFlight > 0 else { return next }
        for slot in slots where slot.state == .waiting && slot.linkGeneration == link.generation {
            let p = parts[slot.index]
            if now >= slot.deadline.nanoseconds {
                let error = RemoteMemError.timedOut(server: address.description, operation: "\(slot.opcode)",
                                                    milliseconds: options.requestTimeoutMillis)
                slot.error = error
                finishLocked(slot)
                breakLocked(link, error: error)
                return now + Self.idleTickNanos
            }
            if now >= p.retransmitAt {
                loss.timedOut(now: now)
                p.retransmitted = true
                p.rto = min(p.rto * 2, LossControl.rtoNanosMax)
                p.retransmitAt = now + p.rto
                sendMissingLocked(p, on: link)
            }
            next = min(next, p.retransmitAt, slot.deadline.nanoseconds)
        }
        return next
    }

    private func maintain() {
        lock.lock()
        defer { lock.unlock() }
        while state != .closed {
            guard case .broken = state else {
                let next = runTimersLocked(now: MonotonicInstant.now.nanoseconds)
                _ = maintenanceWake.wait(lock, until: MonotonicInstant(nanoseconds: next))
                continue
            }
            _ = maintenanceWake.wait(lock, until: MonotonicInstant.now.adding(milliseconds: backoffMillis))
            guard case .broken = state else { continue }
            let old = link
            link = nil
            lock.unlock()
            old?.receiver?.join()
            let attempt = Result { () throws(RemoteMemError) in try Self.handshake(address, options) }
            lock.lock()
            guard state != .closed else { break }
            guard case .broken = state else {
                if case .success(let fresh) = attempt { fresh.socket.shutdown() }
                continue
            }
            switch attempt {
            case .success(let fresh):
                if fresh.serverID != serverID {
                    fresh.socket.shutdown()
                    state = .replaced("the server restarted (new server id) and its pages are gone")
                    continue
                }
                generation += 1
                fresh.generation = generation
                do {
                    try startReceiver(fresh)
                    link = fresh
                    state = .ready
                    loss = LossControl()
                    backoffMillis = ClientLimits.reconnectBackoffMillisMin
                    windowOpened.broadcast()
                } catch {
                    fresh.socket.shutdown()
                }
            case .failure(let error):
                state = .broken(error.description)
                backoffMillis = min(backoffMillis * 2, ClientLimits.reconnectBackoffMillisMax)
            }
        }
    }

    // MARK: - Handshake

    /// A new socket, HELLO and (if either side has a key) AUTH, each sent again every
    /// `handshakeRetryMillis` until answered, within the connect timeout.
    static func handshake(_ address: TCPAddress, _ options: ServerConnection.Options) throws(RemoteMemError) -> Link {
        let server = address.description
        do {
            let socket = try UDPSocket(connectingTo: address)
            try socket.setReceiveTimeout(millis: handshakeRetryMillis)
            let deadline = MonotonicInstant.now.adding(milliseconds: options.connectTimeoutMillis)
            let nonce = WireMessages.randomNonce()
            let (reply, body) = try exchange(.hello, id: DatagramFraming.helloRequestID, payload: WireMessages.hello(nonce: nonce),
                                             on: socket, server: server, deadline: deadline)
            guard reply.status == WireStatus.ok.rawValue else {
                throw RemoteMemError.unreachable(server: server,
                                                 reason: "HELLO refused: \(reply.statusValue?.description ?? "status \(reply.status)")")
            }
            let hello = try HelloReply(body)
            guard hello.version == WireLimits.version else {
                throw RemoteMemError.unreachable(server: server, reason: "server speaks protocol version \(hello.version)")
            }
            let authentication = ClientAuthentication(key: options.clusterKey, clientNonce: nonce)
            if let proof = try authentication.request(after: hello) {
                let (authReply, authBody) = try exchange(.auth, id: DatagramFraming.authRequestID, payload: proof,
                                                         on: socket, server: server, deadline: deadline)
                try authentication.verify(status: authReply.status, payload: authBody, after: hello)
            }
            // The receiver wakes this often to notice a broken link.
            try socket.setReceiveTimeout(millis: 200)
            return Link(socket: socket, serverID: hello.serverID)
        } catch let error as RemoteMemError {
            throw error
        } catch let error as AuthenticationError {
            throw .authenticationFailed(server: server, error)
        } catch let error as Errno {
            throw .unreachable(server: server, reason: "\(error) (errno \(error.rawValue))")
        } catch let error as FrameError {
            throw .protocolViolation(server: server, reason: "HELLO reply: \(error)")
        } catch {
            throw .unreachable(server: server, reason: "\(error)")
        }
    }

    private static func exchange(_ opcode: Opcode, id: UInt64, payload: [UInt8], on socket: UDPSocket, server: String,
                                 deadline: MonotonicInstant) throws -> (FrameHeader, [UInt8]) {
        let request = FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: id)
        var buffer = [UInt8](repeating: 0, count: DatagramFraming.datagramBytesMax)
        while MonotonicInstant.now < deadline {
            try request.bytes.withUnsafeBytes { head in
                try payload.withUnsafeBytes { body in try socket.send(head, body) }
            }
            while true {
                let outcome = buffer.withUnsafeMutableBytes { bytes in
                    Result { () throws(Errno) in try socket.receive(into: bytes).0 }
                }
                let received: Int?
                switch outcome {
                case .success(let count): received = count
                case .failure(let error) where error == .wouldBlock: received = nil
                case .failure(let error): throw error
                }
                guard let count = received else { break }  // send again
                guard count >= FrameHeader.sizeBytes else { continue }
                let reply = buffer.withUnsafeBytes { FrameHeader.decode($0) }
                guard reply.requestID == id, reply.opcode == opcode.rawValue,
                      Int(reply.length) == count - FrameHeader.sizeBytes else { continue }
                return (reply, Array(buffer[FrameHeader.sizeBytes..<count]))
            }
        }
        throw RemoteMemError.unreachable(server: server, reason: "no \(opcode) reply over UDP")
    }
}
