import Synchronization
import RemoteMem

/// Maps one decoded request to its reply: the protocol's semantics with no I/O, so tests can
/// drive it without sockets (style rule 9). The connection reads a frame, calls `handle`, and
/// sends what comes back.
///
/// Two kinds of bad request are told apart (docs/PROTOCOL.md, "Errors"):
/// - a payload whose structure is wrong (shorter or longer than its fields, a WRITE that is not
///   exactly `pageCount` pages, a blob over its limit) throws `FrameError`: the peer is broken
///   and the connection closes;
/// - a well-formed request with a bad value (a name with bad characters, a size or page range
///   out of bounds, a count over its limit) is answered `INVALID`, and the connection goes on.
/// An unknown opcode is answered `UNSUPPORTED`.
///
/// With a cluster key, every request but HELLO and AUTH is answered `UNAUTHENTICATED` until the
/// connection's `Handshake` records a good AUTH; a bad AUTH is answered `AUTH_FAILED` and closes
/// the connection (docs/PROTOCOL.md, "Authentication").
public struct RequestHandler: Sendable {
    public let store: VolumeStore
    public let counters: ServerCounters
    /// This server's identity, sent in every HELLO reply (16 random bytes per process).
    public let serverID: [UInt8]
    /// The pool's key (`--key-file`); nil: no AUTH, every client is served after HELLO.
    public let clusterKey: ClusterKey?

    /// Bytes of the server id and of each nonce.
    public static let identityBytes = 16

    public init(store: VolumeStore, counters: ServerCounters, serverID: [UInt8], clusterKey: ClusterKey? = nil) {
        precondition(serverID.count == Self.identityBytes, "a server id is 16 bytes")
        self.store = store
        self.counters = counters
        self.serverID = serverID
        self.clusterKey = clusterKey
    }

    /// The reply to `header` with its `payload`, on the connection whose handshake state is
    /// `handshake` (HELLO and AUTH update it). READ pages are written into `pageBuffer`, which
    /// must hold `WireLimits.pagesPerRequestMax` pages. Throws if the payload is malformed (the
    /// caller closes the connection and sends nothing).
    public func handle(_ header: FrameHeader, payload: UnsafeRawBufferPointer,
                       pageBuffer: UnsafeMutableRawBufferPointer, handshake: inout Handshake) throws(FrameError) -> Reply {
        precondition(payload.count == Int(header.length), "payload does not match the header")
        counters.recordRequest(header.opcodeValue, requestBytes: FrameHeader.sizeBytes + payload.count)
        let reply = try reply(to: header, payload: payload, pageBuffer: pageBuffer, handshake: &handshake)
        counters.recordReply(replyBytes: reply.wireBytes)
        return reply
    }

    private func reply(to header: FrameHeader, payload: UnsafeRawBufferPointer,
                       pageBuffer: UnsafeMutableRawBufferPointer, handshake: inout Handshake) throws(FrameError) -> Reply {
        let known = header.opcodeValue
        if clusterKey != nil && !handshake.authenticated && known != .hello && known != .auth {
            return .status(.unauthenticated, to: header)
        }
        guard let opcode = known else { return .status(.unsupported, to: header) }
        switch opcode {
        case .read: return read(header, pageBuffer: pageBuffer)
        case .write: return try write(header, payload: payload)
        case .trim: return outcome(header) { () throws(WireStatus) in
            try store.trim(handle: header.volume, epoch: header.epoch, page: header.page, pageCount: header.pageCount)
        }
        case .hello: return try hello(header, payload: Array(payload), handshake: &handshake)
        case .auth: return try auth(header, payload: Array(payload), handshake: &handshake)
        case .ping: return .ok(header, bytes: Array(payload))
        case .serverStat: return serverStat(header)
        case .serverDrain:
            guard payload.count == 1, payload[0] <= 1 else { return .status(.invalid, to: header) }
            store.draining.store(payload[0] == 1, ordering: .relaxed)
            return .status(.ok, to: header)
        case .dedupStat:
            guard payload.isEmpty else { throw .malformedPayload("DEDUP_STAT carries \(payload.count) payload bytes") }
            return .ok(header, bytes: store.dedupStatistics().encoded)
        default: return try control(opcode, header, PayloadReader(Array(payload)))
        }
    }

    // MARK: - Data

    private func read(_ header: FrameHeader, pageBuffer: UnsafeMutableRawBufferPointer) -> Reply {
        precondition(pageBuffer.count >= Int(WireLimits.pagesPerRequestMax) * WireLimits.pageSize, "page buffer too small")
        do {
            try store.read(handle: header.volume, epoch: header.epoch, page: header.page, pageCount: header.pageCount,
                           into: pageBuffer)
        } catch {
            return .status(error, to: header)
        }
        let count = Int(header.pageCount) * WireLimits.pageSize
        return Reply(header: header.reply(status: .ok, length: count), payload: .pageBuffer(count: count))
    }

    private func write(_ header: FrameHeader, payload: UnsafeRawBufferPointer) throws(FrameError) -> Reply {
        let expected = Int(header.pageCount) * WireLimits.pageSize
        guard payload.count == expected else {
            throw .malformedPayload("WRITE of \(header.pageCount) pages carries \(payload.count) bytes, not \(expected)")
        }
        return outcome(header) { () throws(WireStatus) in
            try store.write(handle: header.volume, epoch: header.epoch, page: header.page, pageCount: header.pageCount,
                            from: payload)
        }
    }

    // MARK: - Connection and server

    private func hello(_ header: FrameHeader, payload: [UInt8], handshake: inout Handshake) throws(FrameError) -> Reply {
        var reader = PayloadReader(payload)
        let magic = try reader.u64()
        let version = try reader.u16()
        let serverNonce = WireMessages.randomNonce()
        guard magic == WireLimits.magic, version == WireLimits.version else {
            // Told before the rest is parsed: another version may lay out HELLO differently.
            var reply = Reply.ok(header, bytes: helloReplyPayload(serverNonce: serverNonce))
            reply.header.status = WireStatus.unsupportedVersion.rawValue
            reply.closesConnection = true
            return reply
        }
        _ = try reader.u16()  // flags: none defined for requests in version 1
        _ = try reader.u32()  // reserved
        let clientNonce = try reader.raw(Self.identityBytes)
        try reader.finish()
        // An AUTH proves the key for the nonces of the latest HELLO.
        handshake.clientNonce = clientNonce
        handshake.serverNonce = serverNonce
        if clusterKey == nil { handshake.authenticated = true }
        return .ok(header, bytes: helloReplyPayload(serverNonce: serverNonce))
    }

    /// magic, version, flags (authentication required if this server has a key), reserved,
    /// server nonce, server id.
    private func helloReplyPayload(serverNonce: [UInt8]) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(WireLimits.magic)
        writer.u16(WireLimits.version)
        writer.u16((clusterKey == nil ? 0 : WireMessages.helloFlagAuthenticationRequired) | DedupMessages.helloFlagDedup)
        writer.u32(0)
        writer.raw(serverNonce)
        writer.raw(serverID)
        return writer.bytes
    }

    /// AUTH: the client's proof must be HMAC(key, "memx-auth-client" ‖ client nonce ‖ server
    /// nonce ‖ server id) for this connection's latest HELLO; the reply proves the key back.
    /// A server without a key answers `UNSUPPORTED` (it has nothing to prove); a second AUTH
    /// after a good one is `INVALID`.
    private func auth(_ header: FrameHeader, payload: [UInt8], handshake: inout Handshake) throws(FrameError) -> Reply {
        guard let clusterKey else { return .status(.unsupported, to: header) }
        let proof = try WireMessages.authProof(payload)
        guard !handshake.authenticated else { return .status(.invalid, to: header) }
        guard let clientNonce = handshake.clientNonce, let serverNonce = handshake.serverNonce,
              ClusterKey.proofsMatch(proof, clusterKey.clientProof(clientNonce: clientNonce, serverNonce: serverNonce,
                                                                   serverID: serverID))
        else {
            counters.recordAuthenticationFailure()
            var reply = Reply.status(.authFailed, to: header)
            reply.closesConnection = true
            return reply
        }
        handshake.authenticated = true
        return .ok(header, bytes: clusterKey.serverProof(clientNonce: clientNonce, serverNonce: serverNonce, serverID: serverID))
    }

    private func serverStat(_ header: FrameHeader) -> Reply {
        var writer = PayloadWriter()
        writer.u64(UInt64(store.arena.capacityFrames))
        writer.u64(UInt64(store.arena.usedFrames))
        writer.u32(UInt32(store.volumeCount))
        writer.u32(UInt32(clamping: counters.connectionsOpen))
        writer.u64(counters.requestsServed)
        writer.u64(counters.bytesReceived)
        writer.u64(counters.bytesSent)
        writer.u32(store.draining.load(ordering: .relaxed) ? ServerStatistics.flagDraining : 0)
        writer.u32(0)
        return .ok(header, bytes: writer.bytes)
    }

    // MARK: - Helpers

    /// The reply for an operation with no reply payload: OK, or the status it threw.
    func outcome(_ header: FrameHeader, _ body: () throws(WireStatus) -> Void) -> Reply {
        do {
            try body()
            return .status(.ok, to: header)
        } catch {
            return .status(error, to: header)
        }
    }
}
