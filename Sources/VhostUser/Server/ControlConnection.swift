import Glibc
import Virtio
import LinuxSystem
import Logging

/// One frontend connection's control loop: reads messages strictly in order, runs them through
/// the `BackendSession` state machine, performs its effects (starting and stopping data
/// threads, publishing memory maps), and sends the replies exactly as QEMU checks them.
struct ControlConnection: ~Copyable {
    let connection: UnixConnection
    var session: BackendSession
    var workers: [Int: VringWorker] = [:]
    let logger: Logger
    let pollMicroseconds: Int

    init(connection: consuming UnixConnection, device: any VhostUserDevice, pollMicroseconds: Int, logger: Logger) {
        self.connection = connection
        self.pollMicroseconds = pollMicroseconds
        self.session = BackendSession(device: device, logger: logger)
        self.logger = logger
    }

    /// Serves messages until the frontend hangs up, a fatal protocol error occurs, or `stop`
    /// becomes readable (a termination signal). Returns true if it stopped because of `stop`.
    mutating func serve(stop: CInt) -> Bool {
        var fds = [Poll.readable(connection.descriptor.rawValue), Poll.readable(stop)]
        defer { stopAllRings() }
        while true {
            do {
                _ = try Poll.waitReadable(&fds, timeoutMillis: -1)
            } catch {
                logger.error("poll failed: \(error)")
                return false
            }
            if fds[1].revents != 0 { return true }
            guard fds[0].revents != 0 else { continue }
            do {
                guard try handleOneMessage() else {
                    logger.info("frontend disconnected")
                    return false
                }
            } catch {
                logger.error("closing the connection: \(error)")
                return false
            }
        }
    }

    /// Reads and handles one message. Returns false on a clean hang-up.
    mutating func handleOneMessage() throws(VhostUserError) -> Bool {
        var fds = ReceivedFileDescriptors()
        let header: MessageHeader
        let payload: [UInt8]
        do throws(Errno) {
            guard let headerBytes = try connection.receiveOrEOF(count: MessageHeader.sizeBytes, fds: &fds) else {
                return false
            }
            header = headerBytes.withUnsafeBytes { MessageHeader.decode($0) }
        } catch {
            throw error == .connectionReset ? .disconnected : .io(errno: error.rawValue)
        }
        try MessageCodec.validate(header)
        do throws(Errno) {
            payload = try connection.receive(count: Int(header.size), fds: &fds)
        } catch {
            throw error == .connectionReset ? .disconnected : .io(errno: error.rawValue)
        }
        let message: FrontendMessage
        do {
            message = try Self.decode(header, payload)
        } catch {
            if error.requiresDisconnect { throw error }
            logger.warning("\(error)")
            try acknowledge(header, ok: false)
            return true
        }
        logger.trace("<- \(message.request) \(message)")
        let outcome: SessionOutcome
        do {
            outcome = try session.handle(message, fds: &fds)
        } catch {
            if error.requiresDisconnect { throw error }
            logger.warning("\(message.request) refused: \(error)")
            try acknowledge(header, ok: false)
            return true
        }
        if fds.remaining > 0 {
            logger.debug("\(message.request): closing \(fds.remaining) unexpected fds")
        }
        var stoppedAvail: [Int: UInt16] = [:]
        for effect in outcome.effects { apply(effect, stoppedAvail: &stoppedAvail) }
        try sendReply(outcome.reply, for: message.request, header: header, stoppedAvail: stoppedAvail)
        return true
    }

    private static func decode(_ header: MessageHeader, _ payload: [UInt8]) throws(VhostUserError) -> FrontendMessage {
        var result: Result<FrontendMessage, VhostUserError> = .failure(.disconnected)
        payload.withUnsafeBytes { raw in
            do throws(VhostUserError) { result = .success(try MessageCodec.decode(header, payload: raw)) } catch { result = .failure(error) }
        }
        return try result.get()
    }

    private mutating func apply(_ effect: SessionEffect, stoppedAvail: inout [Int: UInt16]) {
        switch effect {
        case .startVring(let start):
            do {
                let handler = session.device.makeRequestHandler(queueIndex: start.index)
                workers[start.index] = try VringWorker(start: start, handler: handler, pollMicroseconds: pollMicroseconds,
                                                         logger: logger)
                logger.debug("queue \(start.index) started: size \(start.layout.size), base \(start.base)")
            } catch {
                logger.error("queue \(start.index): cannot start its thread: \(error)")
            }
        case .stopVring(let index):
            if let worker = workers.removeValue(forKey: index) {
                stoppedAvail[index] = worker.stop()
                logger.debug("queue \(index) stopped at avail index \(stoppedAvail[index]!)")
            }
        case .publishMemory(let memory, let log):
            for worker in workers.values { worker.publish(memory: memory, log: log) }
        case .setCall(let index, let call):
            workers[index]?.setCall(call)
        case .setEnabled(let index, let enabled):
            workers[index]?.setEnabled(enabled)
        case .activateDevice(let afterHandoff):
            session.device.activate(afterHandoff: afterHandoff)
        case .deactivateDevice(let handoff):
            session.device.deactivate(handoff: handoff)
        case .migrationLogging(let on):
            session.device.migrationLoggingChanged(on)
        }
    }

    private mutating func sendReply(_ reply: SessionReply, for request: FrontendRequest, header: MessageHeader,
                                    stoppedAvail: [Int: UInt16]) throws(VhostUserError) {
        switch reply {
        case .none:
            try acknowledge(header, ok: true)
        case .u64(let value):
            try send(MessageCodec.replyU64(request, value))
        case .bytes(let bytes, let fds):
            defer { for fd in fds { _ = Glibc.close(fd) } }
            try send(bytes, fds: fds)
        case .vringBase(let index):
            let base = session.ringStopped(index, nextAvail: stoppedAvail[index])
            try send(MessageCodec.replyVringState(request, VringState(index: UInt32(index), num: UInt32(base))))
        }
    }

    /// REPLY_ACK: a u64 status (0 = success) for a message that asked for one and has no reply
    /// of its own.
    private func acknowledge(_ header: MessageHeader, ok: Bool) throws(VhostUserError) {
        guard header.needsReply, session.replyAckNegotiated else { return }
        var bytes: [UInt8] = []
        MessageHeader.reply(to: header.request, size: 8).encode(into: &bytes)
        withUnsafeBytes(of: UInt64(ok ? 0 : 1).littleEndian) { bytes.append(contentsOf: $0) }
        try send(bytes)
    }

    private func send(_ bytes: [UInt8], fds: [CInt] = []) throws(VhostUserError) {
        do {
            try connection.send(bytes: bytes, fds: fds)
        } catch {
            throw .io(errno: error.rawValue)
        }
    }

    /// Stops every data thread (after its in-flight requests complete).
    mutating func stopAllRings() {
        for (index, worker) in workers {
            _ = worker.stop()
            logger.debug("queue \(index) stopped")
        }
        workers.removeAll()
    }
}
