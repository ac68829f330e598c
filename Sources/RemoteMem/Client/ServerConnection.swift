import Glibc
import LinuxSystem

/// One TCP connection to a `memx-server` (docs/PROTOCOL.md, "Connection"): HELLO, then
/// pipelined requests, at most `WireLimits.inFlightMax` outstanding, matched to their replies by
/// request id in any order.
///
/// Threads: callers submit from their own threads (a send mutex keeps frames whole) and block
/// on their request's condition; one receiver thread per connection reads each reply's header,
/// finds the request by id and reads a READ reply's pages straight into the destinations the
/// caller registered (no intermediate copy); one maintenance thread reconnects a broken
/// connection with exponential backoff (`reconnectBackoffMillisMin` → `…Max`).
///
/// Failure: a request with no reply within `requestTimeoutMillis` fails with `.timedOut` and
/// resets the connection; a connection that breaks fails every outstanding request at once
/// (`.connectionLost`), and requests submitted while it reconnects fail at once
/// (`.unreachable`), so a dead server never hangs a caller.
public final class ServerConnection: @unchecked Sendable {
    // SAFETY: mutable state (`link`, `state`, `slots`' fields, `freeSlots`, `sequence`,
    // `backoffMillis`) is guarded by `lock`; the socket is written only under `sendLock` and
    // read only by the link's receiver thread.

    /// Timeouts and the cluster key of one connection.
    public struct Options: Sendable {
        public var requestTimeoutMillis: Int
        public var connectTimeoutMillis: Int
        /// The pool's key (`--key-file`): proved to the server, and the server must prove it
        /// back, on every connect and reconnect. Nil: the server must not want one.
        public var clusterKey: ClusterKey?
        /// TCP (the default) or UDP (`DatagramConnection`, docs/PROTOCOL.md "UDP transport").
        public var transport: Transport

        public init(requestTimeoutMillis: Int = ClientLimits.requestTimeoutMillisDefault,
                    connectTimeoutMillis: Int = ClientLimits.connectTimeoutMillisDefault,
                    clusterKey: ClusterKey? = nil, transport: Transport = .tcp) {
            self.requestTimeoutMillis = requestTimeoutMillis
            self.connectTimeoutMillis = connectTimeoutMillis
            self.clusterKey = clusterKey
            self.transport = transport
        }
    }

    /// Whether requests can be sent.
    enum State: Equatable {
        case ready
        /// Broken; the maintenance thread is reconnecting. The reason is what callers see.
        case broken(String)
        /// The server answered a reconnect with another id: it restarted and lost its pages.
        case replaced(String)
        case closed
    }

    /// One TCP connection generation and its receiver thread.
    final class Link: @unchecked Sendable {
        // SAFETY: `connection` is immutable; `broken` and `receiver` are guarded by the
        // owning ServerConnection's lock.
        let connection: TCPConnection
        /// The server's id from this connection's HELLO.
        let serverID: [UInt8]
        var generation: UInt64 = 0
        var broken = false
        var receiver: OSThread?
        /// Header-only requests queued by `submitAsync(deferSend: true)`, sent together by
        /// `sendDeferred` (guarded by `sendLock`). Frames queued on a link that breaks are
        /// never sent: their requests failed with it.
        let deferred: UnsafeMutableRawPointer
        var deferredBytes = 0

        init(_ connection: consuming TCPConnection, serverID: [UInt8]) {
            self.connection = connection
            self.serverID = serverID
            deferred = .allocate(byteCount: WireLimits.inFlightMax * FrameHeader.sizeBytes, alignment: 8)
        }

        deinit { deferred.deallocate() }
    }

    public let address: TCPAddress
    public let options: Options
    /// The server's 16-byte id from HELLO (stable for the server process's life).
    public let serverID: [UInt8]

    private let lock = PosixLock()
    private let sendLock = PosixLock()
    private let windowOpened = PosixCondition()
    private let maintenanceWake = PosixCondition()
    private let slots: [RequestSlot]
    private var freeSlots: [Int]
    private var link: Link?
    private var state: State = .ready
    private var sequence: UInt64 = 1
    private var generation: UInt64 = 1
    private var backoffMillis = ClientLimits.reconnectBackoffMillisMin
    private var maintenance: OSThread?
    /// Asynchronous requests outstanding: while there are any, the maintenance thread enforces
    /// their deadlines (nobody waits on them).
    private var asyncOutstanding = 0
    private var asyncUsed = false
    /// The UDP implementation, when `options.transport` is `.udp`: every public method hands
    /// over to it, and nothing below is used.
    private let datagram: DatagramConnection?

    /// Connects, says HELLO (and AUTH, see `handshake`) and starts the receiver and maintenance
    /// threads. Throws `.unreachable` if the server cannot be reached or does not speak version
    /// 1, `.authenticationFailed` if the cluster keys do not match.
    public init(address: TCPAddress, options: Options = Options()) throws(RemoteMemError) {
        self.address = address
        self.options = options
        if options.transport == .udp {
            let datagram = try DatagramConnection(address: address, options: options)
            self.datagram = datagram
            serverID = datagram.serverID
            slots = []
            freeSlots = []
            return
        }
        datagram = nil
        let first = try Self.handshake(address, options)
        first.generation = generation
        self.serverID = first.serverID
        slots = (0..<WireLimits.inFlightMax).map { RequestSlot(index: $0) }
        freeSlots = Array((0..<WireLimits.inFlightMax).reversed())
        link = first
        do {
            try startReceiver(first)
            maintenance = try OSThread(name: "memx-reconnect") { [self] in maintain() }
        } catch {
            first.connection.shutdown()
            throw .unreachable(server: address.description, reason: "cannot start threads: \(error)")
        }
    }

    deinit { close() }

    /// Fails outstanding requests with `.closed`, closes the socket and joins the threads.
    /// Idempotent.
    public func close() {
        if let datagram { return datagram.close() }
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

    /// Stops this connection for good, without closing it: requests in flight fail with
    /// `.unreachable(reason)`, later ones at once, and it never reconnects. A volume retires the
    /// connection of a server it marks down, so a request planned before that can never reach
    /// the server again through it (a re-admitted server gets a new connection). Idempotent;
    /// `close` still joins the threads.
    public func retire(_ reason: String) {
        if let datagram { return datagram.retire(reason) }
        lock.withLock {
            guard state != .closed else { return }
            if case .replaced = state { return }
            let error = RemoteMemError.unreachable(server: address.description, reason: reason)
            if let link { breakLocked(link, error: error) }
            state = .replaced(reason)
            windowOpened.broadcast()
        }
    }

    /// True while the connection is up (not reconnecting, not closed).
    public var isConnected: Bool { datagram?.isConnected ?? lock.withLock { state == .ready } }

    /// UDP only: requests sent again after a retransmission timeout (0 over TCP).
    public var retransmissions: UInt64 { datagram?.retransmissions ?? 0 }

    // MARK: - Requests

    /// Sends a control request and waits for its reply (allocates; not for the data path).
    public func call(_ opcode: Opcode, volume: UInt32 = 0, epoch: UInt64 = 0,
                     payload: [UInt8] = []) throws(RemoteMemError) -> ServerReply {
        let header = FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: 0, volume: volume, epoch: epoch)
        let submitted = payload.withUnsafeBytes { bytes in
            Result { () throws(RemoteMemError) in try submit(header, payload: bytes, sendingPages: nil, receivingPages: nil) }
        }
        return try wait(try submitted.get())
    }

    /// Submits one request without waiting: `header` (its `requestID` and `length` are filled in
    /// here), then `payload` or the pages of `sendingPages` (one 4 KiB source per page, a WRITE).
    /// For a READ, `receivingPages` gives one 4 KiB destination per page; they must stay valid
    /// until `wait` returns. Blocks while the in-flight window is full (up to the request
    /// timeout). Every ticket returned must be redeemed with `wait`.
    public func submit(_ header: FrameHeader, payload: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                       sendingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                       receivingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?) throws(RemoteMemError) -> RequestTicket {
        try submit(header, payload: payload, sendingPages: sendingPages, receivingPages: receivingPages,
                   waitForWindow: true)!
    }

    /// Like `submit`, but returns nil at once instead of waiting when the in-flight window is
    /// full. A caller that already holds tickets must use this and redeem them before waiting
    /// for the window: if every caller waited for a slot while holding some, none would be
    /// freed (their replies are redeemed only by the waiting callers themselves).
    public func trySubmit(_ header: FrameHeader, payload: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
                          sendingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                          receivingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?) throws(RemoteMemError) -> RequestTicket? {
        try submit(header, payload: payload, sendingPages: sendingPages, receivingPages: receivingPages,
                   waitForWindow: false)
    }

    /// Submits one page request without waiting and without a ticket: the outcome goes to
    /// `request` (its `isFinished`, `status`, `error`) and `request.signal` is told, from the
    /// receiver thread, as soon as the reply is in (for a READ, in `receivingPages`). The window
    /// slot is freed at that moment, so outstanding asynchronous requests never hold the window
    /// against anyone. Returns false, sending nothing, when the window is full (try again after
    /// a completion). No reply within the request timeout fails the request and resets the
    /// connection, like a waited one. Allocates nothing.
    ///
    /// With `deferSend`, a request without payload (a READ) is only queued: it goes out with the
    /// others at the next `sendDeferred`, in one system call and one wake-up of the server. The
    /// caller must call `sendDeferred` before it waits for anything.
    public func submitAsync(_ header: FrameHeader, sendingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                            receivingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                            request: AsyncRequest, deferSend: Bool = false) throws(RemoteMemError) -> Bool {
        try submit(header, payload: UnsafeRawBufferPointer(start: nil, count: 0), sendingPages: sendingPages,
                   receivingPages: receivingPages, waitForWindow: false, asyncRequest: request,
                   deferSend: deferSend && sendingPages == nil) != nil
    }

    /// Sends the requests `submitAsync(deferSend: true)` queued, if any.
    public func sendDeferred() {
        if let datagram { return datagram.sendDeferred() }
        guard let link = lock.withLock({ state == .ready ? self.link : nil }) else { return }
        let failure = sendLock.withLock { () -> Errno? in
            guard link.deferredBytes > 0 else { return nil }
            defer { link.deferredBytes = 0 }
            do throws(Errno) {
                try link.connection.send(UnsafeRawBufferPointer(start: link.deferred, count: link.deferredBytes))
                return nil
            } catch {
                return error
            }
        }
        if let failure {
            lock.withLock { breakLocked(link, error: .connectionLost(server: address.description, reason: "send failed: \(failure)")) }
        }
    }

    private func submit(_ header: FrameHeader, payload: UnsafeRawBufferPointer,
                        sendingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                        receivingPages: UnsafeBufferPointer<UnsafeMutableRawPointer>?,
                        waitForWindow: Bool, asyncRequest: AsyncRequest? = nil,
                        deferSend: Bool = false) throws(RemoteMemError) -> RequestTicket? {
        if let datagram {
            return try datagram.submit(header, payload: payload, sendingPages: sendingPages, receivingPages: receivingPages,
                                       waitForWindow: waitForWindow, asyncRequest: asyncRequest, deferSend: deferSend)
        }
        precondition((sendingPages?.count ?? 0) <= Int(WireLimits.pagesPerRequestMax))
        precondition((receivingPages?.count ?? 0) <= Int(WireLimits.pagesPerRequestMax))
        let opcode = header.opcodeValue ?? .ping
        let deadline = MonotonicInstant.now.adding(milliseconds: options.requestTimeoutMillis)
        lock.lock()
        if !waitForWindow && state == .ready && freeSlots.isEmpty {
            lock.unlock()
            return nil
        }
        while state == .ready && freeSlots.isEmpty {
            if !windowOpened.wait(lock, until: deadline) && freeSlots.isEmpty {
                lock.unlock()
                throw .timedOut(server: address.description, operation: "\(opcode) (in-flight window full)",
                                milliseconds: options.requestTimeoutMillis)
            }
        }
        guard state == .ready, let link else {
            let error = unavailableErrorLocked()
            lock.unlock()
            throw error
        }
        let slot = slots[freeSlots.removeLast()]
        let id = sequence << 8 | UInt64(slot.index)
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
            // No wake-up per request (a context switch each at queue depth 1): once it knows
            // asynchronous requests are used, the maintenance thread checks deadlines on a timer.
            if !asyncUsed {
                asyncUsed = true
                maintenanceWake.signal()
            }
        }
        lock.unlock()

        var frame = header
        frame.requestID = id
        frame.length = UInt32(payload.count + (sendingPages?.count ?? 0) * WireLimits.pageSize)
        if deferSend && payload.isEmpty {
            sendLock.withLock {
                // SAFETY: at most `inFlightMax` requests are outstanding per connection, so the
                // queue (one header per window slot) cannot overflow.
                frame.encode(into: UnsafeMutableRawBufferPointer(start: link.deferred + link.deferredBytes, count: FrameHeader.sizeBytes))
                link.deferredBytes += FrameHeader.sizeBytes
            }
            return RequestTicket(slot: slot.index, requestID: id)
        }
        do {
            try send(frame, payload: payload, pages: sendingPages, on: link)
        } catch {
            lock.withLock { breakLocked(link, error: .connectionLost(server: address.description, reason: "send failed: \(error)")) }
        }
        return RequestTicket(slot: slot.index, requestID: id)
    }

    /// Waits for a submitted request's reply (any status) or its failure, and frees its slot.
    public func wait(_ ticket: RequestTicket) throws(RemoteMemError) -> ServerReply {
        if let datagram { return try datagram.wait(ticket) }
        let slot = slots[ticket.slot]
        lock.lock()
        precondition(slot.requestID == ticket.requestID && slot.state != .free, "ticket redeemed twice")
        while slot.state != .done {
            if !slot.completion.wait(lock, until: slot.deadline) && slot.state != .done
                && MonotonicInstant.now >= slot.deadline {
                // No reply in time: fail this request and reset the connection. A receiver
                // already copying into our destinations finishes (or fails) promptly once the
                // socket is shut down; we keep waiting for that before returning.
                if slot.error == nil {
                    slot.error = .timedOut(server: address.description, operation: "\(slot.opcode)",
                                           milliseconds: options.requestTimeoutMillis)
                }
                if let link, link.generation == slot.linkGeneration {
                    breakLocked(link, error: slot.error!)
                }
                slot.deadline = MonotonicInstant.now.adding(milliseconds: options.requestTimeoutMillis)
            }
        }
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

    private func send(_ header: FrameHeader, payload: UnsafeRawBufferPointer,
                      pages: UnsafeBufferPointer<UnsafeMutableRawPointer>?, on link: Link) throws(Errno) {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: FrameHeader.sizeBytes) { (headerBytes) throws(Errno) in
            let headerBuffer = UnsafeMutableRawBufferPointer(headerBytes)
            header.encode(into: headerBuffer)
            let pageCount = pages?.count ?? 0
            try withUnsafeTemporaryAllocation(of: UnsafeRawBufferPointer.self, capacity: 2 + pageCount) { (buffers) throws(Errno) in
                buffers[0] = UnsafeRawBufferPointer(headerBuffer)
                buffers[1] = payload
                for i in 0..<pageCount {
                    // SAFETY: the caller guarantees each page pointer addresses 4 KiB that stay
                    // valid until `wait` returns.
                    buffers[2 + i] = UnsafeRawBufferPointer(start: pages![i], count: WireLimits.pageSize)
                }
                sendLock.lock()
                defer { sendLock.unlock() }
                try link.connection.send(gathering: UnsafeBufferPointer(buffers))
            }
        }
    }

    // MARK: - Receiving

    private func startReceiver(_ link: Link) throws(Errno) {
        link.receiver = try OSThread(name: "memx-rx-\(address.port)") { [self] in receive(on: link) }
    }

    /// The receiver thread: reads replies until the link breaks.
    private func receive(on link: Link) {
        let server = address.description
        let pieces = UnsafeMutableBufferPointer<UnsafeMutableRawBufferPointer>.allocate(
            capacity: Int(WireLimits.pagesPerRequestMax))
        let headerBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: FrameHeader.sizeBytes, alignment: 8)
        defer {
            pieces.deallocate()
            headerBytes.deallocate()
        }
        while true {
            do {
                guard try link.connection.receiveOrEOF(into: headerBytes) else {
                    return fail(link, nil, .connectionLost(server: server, reason: "the server closed the connection"))
                }
            } catch {
                return fail(link, nil, .connectionLost(server: server, reason: "receive failed: \(error)"))
            }
            let header = FrameHeader.decode(UnsafeRawBufferPointer(headerBytes))
            let (slot, pieceCount, violation) = claim(header, link: link, pieces: pieces)
            if let violation { return fail(link, nil, .protocolViolation(server: server, reason: violation)) }
            guard let slot else { return }
            var payload: [UInt8] = []
            do {
                if pieceCount > 0 {
                    try link.connection.receiveExactly(scattering: UnsafeBufferPointer(rebasing: pieces[..<pieceCount]))
                } else if header.length > 0 {
                    payload = [UInt8](repeating: 0, count: Int(header.length))
                    let received = payload.withUnsafeMutableBytes { bytes in
                        Result { () throws(Errno) in try link.connection.receiveExactly(into: bytes) }
                    }
                    try received.get()
                }
            } catch {
                return fail(link, slot, .connectionLost(server: server, reason: "receive failed: \(error)"))
            }
            lock.withLock {
                slot.reply = header
                slot.payload = payload
                finishLocked(slot)
            }
        }
    }

    /// Finds the request a reply answers and marks it `.receiving`. Returns the slot and, for a
    /// successful READ, the destination pieces (adjacent pages merged); or a protocol violation.
    private func claim(_ header: FrameHeader, link: Link, pieces: UnsafeMutableBufferPointer<UnsafeMutableRawBufferPointer>)
        -> (RequestSlot?, Int, String?) {
        lock.lock()
        defer { lock.unlock() }
        if link.broken { return (nil, 0, nil) }
        let index = Int(header.requestID & 0xFF)
        guard index < slots.count, slots[index].requestID == header.requestID, slots[index].state == .waiting,
              slots[index].linkGeneration == link.generation
        else { return (nil, 0, "reply to unknown request id \(header.requestID)") }
        let slot = slots[index]
        guard header.opcode == slot.opcode.rawValue else {
            return (nil, 0, "reply opcode \(header.opcode) to a \(slot.opcode) request")
        }
        guard Int(header.length) <= FrameDecoder.replyLimit(header) else {
            return (nil, 0, "reply of \(header.length) bytes exceeds the limit")
        }
        var count = 0
        if slot.receivesPages && header.status == WireStatus.ok.rawValue {
            guard Int(header.length) == Int(slot.pageCount) * WireLimits.pageSize else {
                return (nil, 0, "READ of \(slot.pageCount) pages answered with \(header.length) bytes")
            }
            for i in 0..<Int(slot.pageCount) {
                let page = slot.destinations[i]
                if count > 0, pieces[count - 1].baseAddress! + pieces[count - 1].count == page {
                    // SAFETY: merging two adjacent caller-registered destinations.
                    pieces[count - 1] = UnsafeMutableRawBufferPointer(start: pieces[count - 1].baseAddress,
                                                                       count: pieces[count - 1].count + WireLimits.pageSize)
                } else {
                    pieces[count] = UnsafeMutableRawBufferPointer(start: page, count: WireLimits.pageSize)
                    count += 1
                }
            }
        } else if slot.receivesPages && header.length > 0 {
            return (nil, 0, "READ failed with \(header.length) payload bytes")
        }
        slot.state = .receiving
        return (slot, count, nil)
    }

    /// Ends the receiver after an error: fails the request it was reading, if any, and breaks
    /// the link (failing every other outstanding request).
    private func fail(_ link: Link, _ slot: RequestSlot?, _ error: RemoteMemError) {
        lock.withLock {
            if let slot {
                if slot.error == nil { slot.error = error }
                finishLocked(slot)
            }
            breakLocked(link, error: error)
        }
    }

    /// Completes `slot` (lock held): wakes its waiter, or finishes its asynchronous request and
    /// puts the slot back on the free list.
    private func finishLocked(_ slot: RequestSlot) {
        if slot.finish() {
            asyncOutstanding -= 1
            freeSlots.append(slot.index)
            windowOpened.signal()
        }
    }

    // MARK: - Breaking and reconnecting

    /// Marks `link` broken (once): shuts the socket down, fails every request still waiting on
    /// it, and hands the connection to the maintenance thread. Requests being received are
    /// failed by the receiver, which wakes as soon as the socket is shut down.
    private func breakLocked(_ link: Link, error: RemoteMemError) {
        guard !link.broken else { return }
        link.broken = true
        link.connection.shutdown()
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

    /// The maintenance thread: reconnects with exponential backoff while the connection is
    /// broken, until it is closed.
    private func maintain() {
        lock.lock()
        defer { lock.unlock() }
        while state != .closed {
            guard case .broken = state else {
                if !asyncUsed {
                    maintenanceWake.wait(lock)
                } else {
                    // Asynchronous requests have no waiter to notice a missing reply: check
                    // their deadlines a few times per timeout.
                    maintenanceWake.wait(lock, until: MonotonicInstant.now.adding(
                        milliseconds: max(10, options.requestTimeoutMillis / 8)))
                    expireLateRequestsLocked()
                }
                continue
            }
            maintenanceWake.wait(lock, until: MonotonicInstant.now.adding(milliseconds: backoffMillis))
            guard case .broken = state else { continue }
            let old = link
            link = nil
            lock.unlock()
            old?.receiver?.join()
            let attempt = Result { () throws(RemoteMemError) in try Self.handshake(address, options) }
            lock.lock()
            guard state != .closed else { break }
            guard case .broken = state else {
                // Retired while we were connecting: never used again.
                if case .success(let fresh) = attempt { fresh.connection.shutdown() }
                continue
            }
            switch attempt {
            case .success(let fresh):
                if fresh.serverID != serverID {
                    fresh.connection.shutdown()
                    state = .replaced("the server restarted (new server id) and its pages are gone")
                    continue
                }
                generation += 1
                fresh.generation = generation
                do {
                    try startReceiver(fresh)
                    link = fresh
                    state = .ready
                    backoffMillis = ClientLimits.reconnectBackoffMillisMin
                    windowOpened.broadcast()
                } catch {
                    fresh.connection.shutdown()
                }
            case .failure(let error):
                state = .broken(error.description)
                backoffMillis = min(backoffMillis * 2, ClientLimits.reconnectBackoffMillisMax)
            }
        }
    }

    /// Fails the connection if an asynchronous request is past its deadline (lock held): the
    /// request fails with `.timedOut`, every other outstanding one with it, and the connection
    /// is reset, as for a waited request.
    private func expireLateRequestsLocked() {
        guard let link, !link.broken else { return }
        let now = MonotonicInstant.now
        for slot in slots where slot.asyncRequest != nil && slot.state == .waiting
            && slot.linkGeneration == link.generation && now >= slot.deadline {
            let error = RemoteMemError.timedOut(server: address.description, operation: "\(slot.opcode)",
                                                milliseconds: options.requestTimeoutMillis)
            slot.error = error
            finishLocked(slot)
            breakLocked(link, error: error)
            return
        }
    }

    /// Connects to `address` and exchanges HELLO, then, if either side has a cluster key, AUTH
    /// (both sides prove the key; `ClientAuthentication`); returns the new link (generation
    /// unset). Reconnects come here too, so every connection is authenticated afresh.
    static func handshake(_ address: TCPAddress, _ options: Options) throws(RemoteMemError) -> Link {
        let server = address.description
        do {
            let connection = try TCPConnection(connectingTo: address, timeoutMillis: Int32(options.connectTimeoutMillis))
            try connection.setTimeouts(receiveMillis: options.connectTimeoutMillis, sendMillis: options.connectTimeoutMillis)
            let nonce = WireMessages.randomNonce()
            let (reply, body) = try exchange(.hello, payload: WireMessages.hello(nonce: nonce), on: connection, server: server)
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
                let (authReply, authBody) = try exchange(.auth, payload: proof, on: connection, server: server)
                try authentication.verify(status: authReply.status, payload: authBody, after: hello)
            }
            // Replies may legitimately take long (the receiver waits indefinitely; callers time
            // out per request); a stuck send fails after the request timeout.
            try connection.setTimeouts(receiveMillis: 0, sendMillis: options.requestTimeoutMillis)
            return Link(connection, serverID: hello.serverID)
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

    /// One handshake request (HELLO or AUTH, id 0) and its reply header and payload, on a
    /// connection not yet handed to a receiver thread.
    private static func exchange(_ opcode: Opcode, payload: [UInt8], on connection: borrowing TCPConnection,
                                 server: String) throws -> (FrameHeader, [UInt8]) {
        let request = FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: 0)
        try request.bytes.withUnsafeBytes { head in
            try payload.withUnsafeBytes { body in try connection.send(head, body) }
        }
        var headerBytes = [UInt8](repeating: 0, count: FrameHeader.sizeBytes)
        try headerBytes.withUnsafeMutableBytes { bytes in try connection.receiveExactly(into: bytes) }
        let reply = headerBytes.withUnsafeBytes { FrameHeader.decode($0) }
        guard reply.opcode == opcode.rawValue, Int(reply.length) <= WireLimits.smallPayloadBytesMax else {
            throw RemoteMemError.protocolViolation(server: server, reason: "bad \(opcode) reply header")
        }
        var body = [UInt8](repeating: 0, count: Int(reply.length))
        try body.withUnsafeMutableBytes { bytes in try connection.receiveExactly(into: bytes) }
        return (reply, body)
    }
}
