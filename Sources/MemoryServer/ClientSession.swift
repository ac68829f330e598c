import LinuxSystem
import Logging
import RemoteMem

/// The server side of one client connection: its loop, run on its own thread: the HELLO handshake
/// (and AUTH, on a server with a cluster key), then frames read, handled and answered one after
/// another until the peer leaves, sends a malformed frame, fails AUTH, or the server stops
/// (docs/PROTOCOL.md, "Connection").
///
/// Until the client is authenticated the handshake timeout applies to the whole handshake, not
/// only to each receive, and requests may carry only small payloads, so a peer without the key
/// can neither hold a connection slot for long nor make the server read megabytes.
///
/// Buffers are allocated once per connection, not per request: a payload buffer as large as
/// the largest request (`WireLimits.payloadBytesMax`) and a page buffer for READ replies. They
/// are anonymous mappings, so only the bytes a client actually uses become resident.
/// Replies go out in request order, which the protocol allows (any order is allowed).
final class ClientSession {
    private let handler: RequestHandler
    private let logger: Logger
    /// The peer's address, for the log line of a failed AUTH.
    private let peer: String
    private var handshake = Handshake()
    private let payloadBuffer: MemoryReservation
    private let pageBuffer: MemoryReservation
    /// Request and reply headers (40 bytes each).
    private var headerIn = [UInt8](repeating: 0, count: FrameHeader.sizeBytes)
    private var headerOut = [UInt8](repeating: 0, count: FrameHeader.sizeBytes)

    /// Why a session ended: the line logged for it, and how loudly.
    enum Ending {
        case peerClosed
        case refused(String)
        case failed(String)
        /// An AUTH with a wrong proof (another key, or replayed from another connection).
        case authenticationFailed
    }

    init(handler: RequestHandler, logger: Logger, peer: String) throws(Errno) {
        self.handler = handler
        self.logger = logger
        self.peer = peer
        payloadBuffer = try MemoryReservation(length: WireLimits.payloadBytesMax)
        pageBuffer = try MemoryReservation(length: Int(WireLimits.pagesPerRequestMax) * WireLimits.pageSize)
    }

    /// Serves `connection` until it ends, logging one line about how it ended.
    func serve(_ connection: borrowing TCPConnection) {
        let ending = session(connection)
        switch ending {
        case .peerClosed where handshake.greeted && !handshake.authenticated:
            logger.info("connection from \(peer) closed by the client before AUTH (a client without the cluster key?)")
        case .peerClosed: logger.debug("connection closed by the client")
        case .authenticationFailed:
            logger.warning("authentication failed from \(peer): its AUTH proof does not match this server's cluster key (another key, or a replay); connection closed")
        case .refused(let why): logger.warning("connection closed: \(why)")
        case .failed(let why): logger.info("connection closed: \(why)")
        }
    }

    private func session(_ connection: borrowing TCPConnection) -> Ending {
        do {
            try connection.setTimeouts(receiveMillis: MemoryServerLimits.handshakeTimeoutMillis,
                                       sendMillis: MemoryServerLimits.sendTimeoutMillis)
        } catch {
            return .failed("setting socket timeouts: \(error)")
        }
        let handshakeDeadline = ContinuousClock.now.advanced(by: .milliseconds(MemoryServerLimits.handshakeTimeoutMillis))
        var handshakeDone = false
        while true {
            let header: FrameHeader
            do {
                guard let received = try receiveFrame(connection) else { return .peerClosed }
                header = received
            } catch let error as FrameError {
                return .refused(error.description)
            } catch let error as Errno {
                return error == .wouldBlock ? .failed("no \(handshake.greeted ? "AUTH" : "HELLO") within \(MemoryServerLimits.handshakeTimeoutMillis) ms")
                                            : .failed("receive: \(error)")
            } catch {
                return .failed("\(error)")
            }
            if !handshake.greeted && header.opcodeValue != .hello {
                return .refused("first request is opcode \(header.opcode), not HELLO")
            }
            if !handshakeDone && ContinuousClock.now >= handshakeDeadline {
                return .refused("not authenticated within \(MemoryServerLimits.handshakeTimeoutMillis) ms")
            }
            let reply: Reply
            do {
                reply = try payloadBuffer.withBytes(count: Int(header.length)) { payload in
                    try pageBuffer.withMutableBytes { pages in
                        try handler.handle(header, payload: payload, pageBuffer: pages, handshake: &handshake)
                    }
                }
            } catch {
                return .refused("\(Opcode(rawValue: header.opcode).map(String.init(describing:)) ?? "opcode \(header.opcode)"): \(error)")
            }
            do {
                try send(reply, on: connection)
            } catch {
                return .failed("send: \(error)")
            }
            if reply.closesConnection {
                return reply.header.status == WireStatus.authFailed.rawValue
                    ? .authenticationFailed : .refused("HELLO with an unsupported magic or version")
            }
            if !handshakeDone && handshake.authenticated {
                // Handshake done: an idle client may now keep its connection as long as it likes.
                handshakeDone = true
                try? connection.setTimeouts(receiveMillis: 0, sendMillis: MemoryServerLimits.sendTimeoutMillis)
            }
        }
    }

    /// Reads one request: its header, the length check against the opcode's limit, then the
    /// payload into the payload buffer. Nil on a clean EOF between frames.
    private func receiveFrame(_ connection: borrowing TCPConnection) throws -> FrameHeader? {
        let complete = try headerIn.withUnsafeMutableBytes { bytes in try connection.receiveOrEOF(into: bytes) }
        guard complete else { return nil }
        let header = headerIn.withUnsafeBytes { FrameHeader.decode($0) }
        // The limit check comes before a single payload byte is read (docs/PROTOCOL.md, "Limits").
        // Before AUTH, a server with a key reads no request payload beyond the small limit.
        var limit = FrameDecoder.requestLimit(header)
        if handler.clusterKey != nil && !handshake.authenticated { limit = min(limit, WireLimits.smallPayloadBytesMax) }
        guard Int(header.length) <= limit else {
            throw FrameError.payloadTooLarge(opcode: header.opcode, length: header.length, limit: limit)
        }
        if header.length > 0 {
            // SAFETY: length ≤ limit ≤ payloadBytesMax, the buffer's size.
            try connection.receiveExactly(into: UnsafeMutableRawBufferPointer(start: payloadBuffer.base, count: Int(header.length)))
        }
        return header
    }

    /// Sends the reply's header and payload with one `writev`.
    private func send(_ reply: Reply, on connection: borrowing TCPConnection) throws {
        headerOut.withUnsafeMutableBytes { reply.header.encode(into: $0) }
        try headerOut.withUnsafeBytes { header in
            switch reply.payload {
            case .none:
                try connection.send(header)
            case .bytes(let bytes):
                try bytes.withUnsafeBytes { payload in try connection.send(header, payload) }
            case .pageBuffer(let count):
                // SAFETY: count ≤ pagesPerRequestMax pages, the page buffer's size (RequestHandler.read).
                try connection.send(header, UnsafeRawBufferPointer(start: pageBuffer.base, count: count))
            }
        }
    }
}

extension MemoryReservation {
    /// Calls `body` with the first `count` bytes (count ≤ length).
    fileprivate func withBytes<T, E: Error>(count: Int, _ body: (UnsafeRawBufferPointer) throws(E) -> T) throws(E) -> T {
        precondition(count <= length)
        // SAFETY: count ≤ length (checked above); the reservation outlives the call.
        return try body(UnsafeRawBufferPointer(start: base, count: count))
    }

    /// Calls `body` with all bytes, writable.
    fileprivate func withMutableBytes<T, E: Error>(_ body: (UnsafeMutableRawBufferPointer) throws(E) -> T) throws(E) -> T {
        // SAFETY: the whole reservation; it outlives the call.
        try body(UnsafeMutableRawBufferPointer(start: base, count: length))
    }
}
