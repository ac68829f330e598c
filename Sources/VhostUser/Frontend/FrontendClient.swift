import GuestMemory
import LinuxSystem
import Virtio

/// The frontend (QEMU) side of a vhost-user connection to a block backend. Tests use it to
/// drive memx-vhost, and memx-bench uses it to drive memx-vhost and qemu-storage-daemon.
///
/// The client owns the control socket. It offers three layers, and a test may mix them:
/// * Raw: `sendRaw(bytes:fds:)` and `receiveAny()`, for hostile tests.
/// * Messages: `send(_:fds:needReply:)`, `receiveReply(expecting:)`, and `sendAcknowledged`,
///   which honours REPLY_ACK.
/// * Session: `negotiate()`, `start(queues:queueSize:)` and `stop()` replay QEMU 7.2's
///   message sequence (see `FrontendClient+Negotiation.swift` and
///   `FrontendClient+DeviceStart.swift`).
///
/// Every receive is bounded by `options.replyTimeout`, so a silent backend makes a call throw
/// `timedOut` and can never hang it. The client is not thread-safe. Use it from one thread; the
/// `BlockQueueClient`s it returns may each move to their own thread.
public final class FrontendClient {
    public let socketPath: String
    public let guestRAM: GuestRAM
    public let options: FrontendOptions
    let connection: UnixConnection
    /// The receive timeout currently set on the socket, in milliseconds.
    private var socketTimeoutMillis: Int

    // MARK: Negotiated state (filled in by `negotiate` and `start`)

    /// The virtio/vhost feature bits from the most recent GET_FEATURES.
    public internal(set) var backendFeatures: VirtioFeatures = []
    /// The protocol features the backend offered.
    public internal(set) var backendProtocolFeatures: ProtocolFeatures = []
    /// The protocol features both sides agreed on (what SET_PROTOCOL_FEATURES carried).
    public internal(set) var protocolFeatures: ProtocolFeatures = []
    /// GET_QUEUE_NUM's answer, or 1 without MQ.
    public internal(set) var queueCountMax: Int = 1
    /// GET_MAX_MEM_SLOTS's answer, if CONFIGURE_MEM_SLOTS was negotiated.
    public internal(set) var memorySlotsMax: UInt64?
    /// The decoded GET_CONFIG answer.
    public internal(set) var config: BlockConfigSpace?
    /// The raw GET_CONFIG bytes, as many as the backend returned.
    public internal(set) var configBytes: [UInt8] = []
    /// The bits the last SET_FEATURES carried, or nil before the first `start`.
    public internal(set) var ackedFeatures: VirtioFeatures?
    /// The inflight buffer in use, if INFLIGHT_SHMFD was negotiated and the backend gave one.
    public internal(set) var inflight: InflightBuffer?
    /// True once the memory table has been sent. QEMU does not send it again on a restart when
    /// it is unchanged, and neither do we.
    public internal(set) var memoryTableSent = false
    /// The queue indices started and not stopped since.
    public internal(set) var startedQueues: [Int] = []
    /// Ring areas already carved out of guest RAM, reused when a queue is started again.
    var queueAreas: [Int: BlockQueueArea] = [:]

    /// Connects to the backend socket at `socketPath`. This only opens the socket and sends
    /// nothing. Call `negotiate()` next, or use `connect(socketPath:guestRAM:options:)`.
    public init(socketPath: String, guestRAM: GuestRAM,
                options: FrontendOptions = FrontendOptions()) throws(FrontendError) {
        do {
            connection = try UnixConnection(connectingTo: socketPath)
        } catch {
            throw .connectFailed(path: socketPath, errno: error)
        }
        self.socketPath = socketPath
        self.guestRAM = guestRAM
        self.options = options
        socketTimeoutMillis = options.replyTimeoutMillis
        do {
            try connection.setTimeouts(receiveMillis: socketTimeoutMillis, sendMillis: socketTimeoutMillis)
        } catch {
            throw .socket(operation: "setting socket timeouts", errno: error)
        }
    }

    /// Connects and runs QEMU 7.2's realize-time handshake (`negotiate()`).
    public static func connect(socketPath: String, guestRAM: GuestRAM,
                               options: FrontendOptions = FrontendOptions()) throws(FrontendError) -> FrontendClient {
        let client = try FrontendClient(socketPath: socketPath, guestRAM: guestRAM, options: options)
        _ = try client.negotiate()
        return client
    }

    // MARK: Raw bytes

    /// Sends `bytes` exactly as given, with `fds` attached to the first byte. Hostile tests use
    /// this for truncated headers, oversized payloads and stray descriptors.
    public func sendRaw(bytes: [UInt8], fds: [CInt] = []) throws(FrontendError) {
        guard !bytes.isEmpty else { throw .invalidArgument("sendRaw needs at least one byte to carry the fds") }
        let timeout = socketTimeoutMillis
        let result = bytes.withUnsafeBytes { raw in
            Result { () throws(Errno) in try connection.send(raw, fds: fds) }
        }
        do {
            try result.get()
        } catch {
            throw FrontendError.fromSocket(error, operation: "send", timeoutMillis: timeout)
        }
    }

    /// Receives the next message from the backend whatever it is, without checking it. Waits at
    /// most `timeout`, or `options.replyTimeout` when that is nil.
    public func receiveAny(timeout: Duration? = nil) throws(FrontendError) -> FrontendReply {
        try setReceiveTimeout(timeout)
        let context = "waiting for a reply"
        var fds = ReceivedFileDescriptors()
        var headerBytes = [UInt8](repeating: 0, count: MessageHeader.sizeBytes)
        let headerResult = headerBytes.withUnsafeMutableBytes { raw in
            Result { () throws(Errno) -> Bool in try connection.receiveOrEOF(into: raw, fds: &fds) }
        }
        let gotHeader: Bool
        do {
            gotHeader = try headerResult.get()
        } catch {
            throw FrontendError.fromSocket(error, operation: context, timeoutMillis: socketTimeoutMillis)
        }
        guard gotHeader else { throw .disconnected(context: context) }
        let header = headerBytes.withUnsafeBytes { MessageHeader.decode($0) }
        guard Int(header.size) <= VhostUserLimits.payloadBytesMax else {
            throw .badReplyPayload(request: FrontendError.requestName(header.request), size: Int(header.size),
                                   expected: "≤ \(VhostUserLimits.payloadBytesMax)")
        }
        var payload = [UInt8](repeating: 0, count: Int(header.size))
        if !payload.isEmpty {
            let payloadResult = payload.withUnsafeMutableBytes { raw in
                Result { () throws(Errno) in try connection.receiveExactly(into: raw, fds: &fds) }
            }
            do {
                try payloadResult.get()
            } catch {
                throw FrontendError.fromSocket(error, operation: context + " payload",
                                               timeoutMillis: socketTimeoutMillis)
            }
        }
        return FrontendReply(header: header, payload: payload, fileDescriptors: fds)
    }

    private func setReceiveTimeout(_ timeout: Duration?) throws(FrontendError) {
        let millis = timeout.map { max(1, Int($0.millisecondsRoundedUp)) } ?? options.replyTimeoutMillis
        guard millis != socketTimeoutMillis else { return }
        do {
            try connection.setTimeouts(receiveMillis: millis, sendMillis: millis)
        } catch {
            throw .socket(operation: "setting socket timeouts", errno: error)
        }
        socketTimeoutMillis = millis
    }

    // MARK: Messages

    /// Encodes and sends one front-end message. With `needReply` the NEED_REPLY flag is set,
    /// and the caller must then read the ack with `receiveReply(expecting:)`.
    public func send(_ message: FrontendMessage, fds: [CInt] = [], needReply: Bool = false) throws(FrontendError) {
        try sendRaw(bytes: MessageCodec.encode(message, needReply: needReply), fds: fds)
    }

    /// Receives the backend's reply to `request`. The flags must be exactly 0x5 and the request
    /// code must match, because QEMU 7.2 checks both.
    public func receiveReply(expecting request: FrontendRequest,
                             timeout: Duration? = nil) throws(FrontendError) -> FrontendReply {
        let reply = try receiveAny(timeout: timeout)
        guard reply.header.request == request.rawValue,
              reply.header.flags == MessageHeader.version | MessageHeader.replyFlag
        else { throw .unexpectedReply(expected: request.description, header: reply.header) }
        return reply
    }

    /// Sends a message that always replies (GET_FEATURES, GET_CONFIG, GET_VRING_BASE, ...) and
    /// returns the reply.
    public func request(_ message: FrontendMessage, fds: [CInt] = []) throws(FrontendError) -> FrontendReply {
        try send(message, fds: fds)
        return try receiveReply(expecting: message.request)
    }

    /// Sends a message that has no reply of its own. If REPLY_ACK was negotiated, it sets
    /// NEED_REPLY, reads the u64 ack and throws `negativeAcknowledgement` if it is nonzero.
    /// Without REPLY_ACK it just sends.
    public func sendAcknowledged(_ message: FrontendMessage, fds: [CInt] = []) throws(FrontendError) {
        let wantAck = protocolFeatures.contains(.replyAck)
        try send(message, fds: fds, needReply: wantAck)
        guard wantAck else { return }
        let status = try receiveReply(expecting: message.request).u64()
        guard status == 0 else { throw .negativeAcknowledgement(request: message.request.description, status: status) }
    }

    /// Sends a session message the way `options.acknowledgement` says. `qemuNeedsReply` tells
    /// whether QEMU 7.2 itself sets NEED_REPLY on it.
    func sendControl(_ message: FrontendMessage, fds: [CInt] = [], qemuNeedsReply: Bool = false) throws(FrontendError) {
        if qemuNeedsReply || options.acknowledgement == .everyMessage {
            try sendAcknowledged(message, fds: fds)
        } else {
            try send(message, fds: fds)
        }
    }

    /// Sends `message` and decodes its u64 reply.
    func requestU64(_ message: FrontendMessage) throws(FrontendError) -> UInt64 {
        try request(message).u64()
    }
}
