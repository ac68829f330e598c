import Glibc
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
/// Batching: requests are read through an inbox buffer (one `recv` takes every frame the client
/// has pipelined), and replies are built in an outbox (a READ's pages are copied from the arena
/// straight behind their header) that is sent with one `send` when no further complete request
/// is waiting, or when it is full. A client with 32 requests in flight thus costs a few system
/// calls and wake-ups per batch instead of three per request; a lone request is answered at once.
///
/// Buffers are allocated once per connection, not per request. They are anonymous mappings, so
/// only the bytes a client actually uses become resident. Replies go out in request order,
/// which the protocol allows (any order is allowed).
final class ClientSession {
    private let handler: RequestHandler
    private let logger: Logger
    /// The peer's address, for the log line of a failed AUTH.
    private let peer: String
    private var handshake = Handshake()
    /// Received bytes not yet handled: `[inStart, inEnd)`. Room for two of the largest frames,
    /// so a whole frame always fits after moving the unread tail to the front.
    private let inbox: MemoryReservation
    private var inStart = 0
    private var inEnd = 0
    /// Replies not yet sent: `[0, outEnd)`.
    private let outbox: MemoryReservation
    private var outEnd = 0
    static let frameBytesMax = FrameHeader.sizeBytes + WireLimits.payloadBytesMax
    /// The largest reply (METADATA_GET's table; a READ's pages are far less).
    static let replyBytesMax = FrameHeader.sizeBytes + WireLimits.payloadBytesMax

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
        inbox = try MemoryReservation(length: 2 * Self.frameBytesMax)
        outbox = try MemoryReservation(length: 2 * Self.replyBytesMax)
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
                if outEnd + Self.replyBytesMax > outbox.length { try flush(connection) }
                // SAFETY: the payload lies inside the inbox (receiveFrame made it whole there);
                // the page buffer is the outbox room behind this reply's header, at least
                // `replyBytesMax - header` bytes (checked above).
                let payload = UnsafeRawBufferPointer(start: inbox.base + inStart + FrameHeader.sizeBytes, count: Int(header.length))
                let pages = UnsafeMutableRawBufferPointer(start: outbox.base + outEnd + FrameHeader.sizeBytes,
                                                          count: Self.replyBytesMax - FrameHeader.sizeBytes)
                reply = try handler.handle(header, payload: payload, pageBuffer: pages, handshake: &handshake)
            } catch let error as Errno {
                return .failed("send: \(error)")
            } catch {
                return .refused("\(Opcode(rawValue: header.opcode).map(String.init(describing:)) ?? "opcode \(header.opcode)"): \(error)")
            }
            inStart += FrameHeader.sizeBytes + Int(header.length)
            append(reply)
            do {
                // Answer now unless another whole request is already here (it joins this send).
                if reply.closesConnection || !hasWholeFrame { try flush(connection) }
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

    /// Reads one request into the inbox: its header, the length check against the opcode's
    /// limit, then the payload. Nil on a clean EOF between frames. The frame stays at
    /// `inStart` until the caller moves past it.
    private func receiveFrame(_ connection: borrowing TCPConnection) throws -> FrameHeader? {
        guard try fill(FrameHeader.sizeBytes, connection) else { return nil }
        // SAFETY: at least a header's bytes are buffered from `inStart`.
        let header = FrameHeader.decode(UnsafeRawBufferPointer(start: inbox.base + inStart, count: FrameHeader.sizeBytes))
        // The limit check comes before a single payload byte is read (docs/PROTOCOL.md, "Limits").
        // Before AUTH, a server with a key reads no request payload beyond the small limit.
        var limit = FrameDecoder.requestLimit(header)
        if handler.clusterKey != nil && !handshake.authenticated { limit = min(limit, WireLimits.smallPayloadBytesMax) }
        guard Int(header.length) <= limit else {
            throw FrameError.payloadTooLarge(opcode: header.opcode, length: header.length, limit: limit)
        }
        guard try fill(FrameHeader.sizeBytes + Int(header.length), connection) else { throw Errno.connectionReset }
        return header
    }

    /// True if a whole request is already buffered (so replying can wait for it).
    private var hasWholeFrame: Bool {
        let buffered = inEnd - inStart
        guard buffered >= FrameHeader.sizeBytes else { return false }
        // SAFETY: a header's bytes are buffered from `inStart`.
        let header = FrameHeader.decode(UnsafeRawBufferPointer(start: inbox.base + inStart, count: FrameHeader.sizeBytes))
        return buffered >= FrameHeader.sizeBytes + Int(min(header.length, UInt32(Self.frameBytesMax)))
    }

    /// Makes at least `count` bytes (≤ `frameBytesMax`) available from `inStart`, receiving as
    /// much as the socket has. Sends pending replies before blocking (the client may be waiting
    /// for them before it sends more). False on EOF with nothing buffered; EOF inside a frame
    /// throws `ECONNRESET`.
    private func fill(_ count: Int, _ connection: borrowing TCPConnection) throws -> Bool {
        while inEnd - inStart < count {
            if inStart + count > inbox.length {
                // SAFETY: both ranges lie in the inbox; memmove allows overlap.
                memmove(inbox.base, inbox.base + inStart, inEnd - inStart)
                inEnd -= inStart
                inStart = 0
            }
            try flush(connection)
            let n = try connection.receiveSome(into: UnsafeMutableRawBufferPointer(start: inbox.base + inEnd, count: inbox.length - inEnd))
            if n == 0 {
                if inEnd == inStart { return false }
                throw Errno.connectionReset
            }
            inEnd += n
        }
        return true
    }

    /// Puts the reply's header and payload into the outbox (a READ's pages are there already).
    private func append(_ reply: Reply) {
        // SAFETY: the outbox has `replyBytesMax` bytes of room from `outEnd` (checked before
        // the request was handled); every payload fits in that.
        let header = UnsafeMutableRawBufferPointer(start: outbox.base + outEnd, count: FrameHeader.sizeBytes)
        reply.header.encode(into: header)
        var length = 0
        switch reply.payload {
        case .none:
            break
        case .bytes(let bytes):
            if !bytes.isEmpty {
                bytes.withUnsafeBytes { (outbox.base + outEnd + FrameHeader.sizeBytes).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            }
            length = bytes.count
        case .pageBuffer(let count):
            length = count
        }
        outEnd += FrameHeader.sizeBytes + length
    }

    /// Sends every reply in the outbox with one `send`.
    private func flush(_ connection: borrowing TCPConnection) throws(Errno) {
        guard outEnd > 0 else { return }
        defer { outEnd = 0 }
        try connection.send(UnsafeRawBufferPointer(start: outbox.base, count: outEnd))
    }
}
