import LinuxSystem

/// A synchronous client of one memory server for control operations: one connection, one
/// request at a time, each call blocking until its reply (or the timeout).
///
/// It is what `memxctl` and tests use to create, list, inspect and delete volumes and to read a
/// server's load; the data path (`ServerConnection`) pipelines instead. Besides the typed
/// operations (`ControlClient+Operations.swift`) it has a raw frame interface (`send`,
/// `receive`, `call`) for tests that craft frames themselves.
///
/// Timeouts: the connect must complete within `timeoutMillis`, and every receive and send must
/// make progress within it. A timed-out or broken connection is shut down (a late reply would
/// desynchronise the stream): every later call fails, and the caller connects again.
///
/// Threads: not for concurrent use, except that one thread may `send` while another `receive`s
/// (a pipelined test), as the socket allows; `makeRequestID` belongs to the sending thread.
public final class ControlClient {
    /// Default connect and reply timeout.
    public static let defaultTimeoutMillis = 5000
    /// Bytes of a HELLO nonce and of a server id.
    public static let nonceBytes = WireMessages.nonceBytes

    /// The server's address.
    public let server: TCPAddress
    public let timeoutMillis: Int
    /// The pool's key (`--key-file`); nil: the server must not want one.
    public let clusterKey: ClusterKey?
    /// The server's `HELLO` reply; nil until the handshake is done.
    public private(set) var hello: ServerHello?

    private let connection: TCPConnection
    private var nextRequestID: UInt64 = 1

    /// Connects to `server` within `timeoutMillis` and, unless `handshake` is false (tests of
    /// the handshake itself), does the `HELLO` exchange and, if either side has a cluster key,
    /// the `AUTH` exchange.
    public init(connectingTo server: TCPAddress, timeoutMillis: Int = ControlClient.defaultTimeoutMillis,
                clusterKey: ClusterKey? = nil, handshake: Bool = true) throws(ControlError) {
        self.server = server
        self.timeoutMillis = max(1, timeoutMillis)
        self.clusterKey = clusterKey
        let name = server.description
        do {
            connection = try TCPConnection(connectingTo: server, timeoutMillis: Int32(clamping: self.timeoutMillis))
            try connection.setTimeouts(receiveMillis: self.timeoutMillis, sendMillis: self.timeoutMillis)
        } catch {
            throw ControlError.connecting(error, server: name, timeoutMillis: self.timeoutMillis)
        }
        if handshake { try sayHello() }
    }

    /// The `HELLO` exchange: this protocol version and a random nonce out, the server's version,
    /// nonce and id back; then, if either side has a cluster key, `AUTH` (`ClientAuthentication`:
    /// both sides prove the key). `unsupportedVersion` if the server speaks another version,
    /// `authenticationFailed` if the keys do not match (the connection is then shut down).
    @discardableResult
    public func sayHello() throws(ControlError) -> ServerHello {
        let nonce = WireMessages.randomNonce()
        let reply: (header: FrameHeader, payload: [UInt8])
        do throws(ControlError) {
            reply = try call(.hello, payload: WireMessages.hello(nonce: nonce))
        } catch .protocolViolation(let server, let reason) {
            throw .protocolViolation(server: server, reason: "\(reason); is it a memx-server?")
        }
        let status = reply.header.statusValue
        guard status == .ok || status == .unsupportedVersion else { throw refusal(reply.header, .hello, volume: nil) }
        let parsed = try parse(reply.payload, of: .hello) { (payload) throws(FrameError) in try ServerHello(payload) }
        guard status == .ok else {
            connection.shutdown()
            throw ControlError.unsupportedVersion(server: server.description, version: parsed.version)
        }
        guard parsed.version == WireLimits.version else {
            throw ControlError.protocolViolation(server: server.description, reason: "HELLO answered OK with version \(parsed.version)")
        }
        try authenticate(after: parsed, clientNonce: nonce)
        hello = parsed
        return parsed
    }

    /// The `AUTH` exchange after `hello`, if either side has a key.
    private func authenticate(after hello: ServerHello, clientNonce: [UInt8]) throws(ControlError) {
        let authentication = ClientAuthentication(key: clusterKey, clientNonce: clientNonce)
        let proof: [UInt8]?
        do {
            proof = try authentication.request(after: hello)
        } catch {
            throw authenticationFailure(error)
        }
        guard let proof else { return }
        let reply = try call(.auth, payload: proof)
        do {
            try authentication.verify(status: reply.header.status, payload: reply.payload, after: hello)
        } catch {
            throw authenticationFailure(error)
        }
    }

    /// Shuts the unauthenticated connection down and returns the error naming why.
    private func authenticationFailure(_ error: AuthenticationError) -> ControlError {
        connection.shutdown()
        return .authenticationFailed(server: server.description, error)
    }

    // MARK: - Raw frames

    /// A new request id (ids count up from 1 on each connection).
    public func makeRequestID() -> UInt64 {
        defer { nextRequestID &+= 1 }
        return nextRequestID
    }

    /// Sends `header` exactly as given (its `length` too, so a test can announce a length the
    /// payload does not have), then `payload`, in one write.
    public func send(_ header: FrameHeader, payload: [UInt8] = []) throws(ControlError) {
        let bytes = header.bytes + payload
        let failure: Errno? = bytes.withUnsafeBytes { raw in
            do throws(Errno) { try connection.send(raw) } catch { return error }
            return nil
        }
        if let error = failure {
            connection.shutdown()
            throw ControlError.transfer(error, server: server.description, operation: Self.name(header.opcode),
                                        timeoutMillis: timeoutMillis)
        }
    }

    /// Receives one frame: the header, checked against the reply payload limit, then its payload.
    public func receive() throws(ControlError) -> (header: FrameHeader, payload: [UInt8]) {
        try receive(awaiting: "receive")
    }

    /// `receive`, naming `operation` (the request awaiting its reply) in errors.
    private func receive(awaiting operation: String) throws(ControlError) -> (header: FrameHeader, payload: [UInt8]) {
        var head = [UInt8](repeating: 0, count: FrameHeader.sizeBytes)
        try receiveExactly(&head, operation: operation)
        let header = head.withUnsafeBytes { FrameHeader.decode($0) }
        guard Int(header.length) <= FrameDecoder.replyLimit(header) else {
            connection.shutdown()
            throw ControlError.protocolViolation(server: server.description,
                                                 reason: "reply of \(header.length) payload bytes (limit \(FrameDecoder.replyLimit(header)))")
        }
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        try receiveExactly(&payload, operation: operation)
        return (header, payload)
    }

    /// One request, one reply: sends `opcode` with a new id, the header fields given and
    /// `payload` (its length set from the payload), and returns the reply whatever its status.
    /// A reply with another id or opcode is a `protocolViolation` (requests are not pipelined).
    @discardableResult
    public func call(_ opcode: Opcode, volume: UInt32 = 0, epoch: UInt64 = 0, page: UInt64 = 0, pageCount: UInt32 = 0,
                     payload: [UInt8] = []) throws(ControlError) -> (header: FrameHeader, payload: [UInt8]) {
        let id = makeRequestID()
        try send(FrameHeader(length: UInt32(payload.count), opcode: opcode, requestID: id, volume: volume,
                             pageCount: pageCount, epoch: epoch, page: page),
                 payload: payload)
        let reply = try receive(awaiting: opcode.description)
        guard reply.header.requestID == id, reply.header.opcode == opcode.rawValue else {
            connection.shutdown()
            throw ControlError.protocolViolation(
                server: server.description,
                reason: "reply (id \(reply.header.requestID), opcode \(reply.header.opcode)) does not answer \(opcode) id \(id)")
        }
        return reply
    }

    /// Shuts the connection down; every later call fails. The socket closes when the client goes.
    public func close() { connection.shutdown() }

    // MARK: - Helpers for the operations

    /// Parses a reply payload, turning a malformed one into a `protocolViolation`.
    func parse<T>(_ payload: [UInt8], of opcode: Opcode,
                  _ body: ([UInt8]) throws(FrameError) -> T) throws(ControlError) -> T {
        do {
            return try body(payload)
        } catch {
            throw ControlError.protocolViolation(server: server.description, reason: "\(opcode) reply: \(error)")
        }
    }

    /// The error for a reply whose status is not `OK`.
    func refusal(_ header: FrameHeader, _ opcode: Opcode, volume: String?) -> ControlError {
        guard let status = header.statusValue else {
            return .protocolViolation(server: server.description, reason: "\(opcode) reply with unknown status \(header.status)")
        }
        return .refused(server: server.description, operation: opcode, status: status, volume: volume)
    }

    private func receiveExactly(_ bytes: inout [UInt8], operation: String) throws(ControlError) {
        guard !bytes.isEmpty else { return }
        let failure: Errno? = bytes.withUnsafeMutableBytes { raw in
            do throws(Errno) { try connection.receiveExactly(into: raw) } catch { return error }
            return nil
        }
        if let error = failure {
            connection.shutdown()
            throw ControlError.transfer(error, server: server.description, operation: operation, timeoutMillis: timeoutMillis)
        }
    }

    private static func name(_ rawOpcode: UInt16) -> String {
        Opcode(rawValue: rawOpcode)?.description ?? "opcode \(rawOpcode)"
    }
}
