import BlockDevice
import Glibc
import GuestMemory
import LinuxSystem
import Logging
import RemoteMem
import VhostUser
import Virtio

/// The vhost-user control path without a frontend, for fuzzing: message bytes are framed as
/// `ControlConnection` frames them (`MessageCodec.validate` on the 12-byte header, then `size`
/// payload bytes), decoded, and handled by a `BackendSession` for a real `MemxBlockDevice`, with
/// real file descriptors attached (memfds and an eventfd, passed over a socketpair so they arrive
/// in `ReceivedFileDescriptors` exactly as from QEMU). Every outcome is checked (`violation`).
/// An error that requires a disconnect starts a new session, as the server would.
///
/// The session maps the memory regions it is given but nothing here touches guest memory: no
/// data thread runs, so a region larger than its memfd is harmless.
public final class VhostUserHarness {
    public static let queueCount = 2
    /// Bytes of each memfd offered as guest RAM.
    public static let memfdBytes = 1 << 20

    public let device: MemxBlockDevice
    public private(set) var session: BackendSession
    let logger: Logger
    /// The socketpair that carries fds into `ReceivedFileDescriptors`.
    let sender: UnixConnection
    let receiver: UnixConnection
    /// Raw fds offered with messages, in order: memfds of `memfdBytes`, then an eventfd.
    public let offeredFDs: [CInt]
    private let notifier: EventNotifier
    private var pending: [UInt8] = []
    private var pendingHeader: MessageHeader?

    /// Messages decoded and handled, sessions started (1 + disconnects), rings started, and
    /// errors by kind: what tests check to know the generator reached deep states.
    public private(set) var messagesHandled = 0
    public private(set) var sessions = 1
    public private(set) var ringsStarted = 0
    /// Whether the session activated the device and has not deactivated it (per connection).
    private var deviceActive = false
    public private(set) var errors: [String: Int] = [:]

    public init() throws {
        var logger = Logger(label: "memx-fuzz")
        logger.logLevel = .critical
        self.logger = logger
        device = MemxBlockDevice(configuration: BlockDeviceConfiguration(capacityBytes: 1 << 20, queueCount: Self.queueCount,
                                                                         readOnly: false, serial: "memx-fuzz"),
                                 store: NullPageStore(capacityBytes: 1 << 20))
        session = BackendSession(device: device, logger: logger)
        let (a, b) = try UnixConnection.rawPair()
        sender = UnixConnection(FileDescriptor(adopting: a))
        receiver = UnixConnection(FileDescriptor(adopting: b))
        var fds: [CInt] = []
        for i in 0..<3 { fds.append(try MemFD.create(name: "memx-fuzz-\(i)", size: Self.memfdBytes).release()) }
        notifier = try EventNotifier()
        offeredFDs = fds + [notifier.rawValue]
    }

    deinit { for fd in offeredFDs.dropLast() { _ = Glibc.close(fd) } }

    /// A new connection: a fresh session, nothing buffered.
    public func reconnect() {
        session = BackendSession(device: device, logger: logger)
        deviceActive = false
        pending = []
        pendingHeader = nil
        sessions += 1
    }

    /// Receives `bytes` as one `recvmsg` with `fdCount` descriptors (taken round-robin from
    /// `offeredFDs`; at most `ReceivedFileDescriptors.capacity`, all `sendmsg` here can carry),
    /// and handles every message they complete; the fds go with the first. Returns the first
    /// violation, or nil.
    public func feed(_ bytes: [UInt8], fdCount requested: Int) throws -> String? {
        let fdCount = min(requested, ReceivedFileDescriptors.capacity)
        var fds = ReceivedFileDescriptors()
        if fdCount > 0 {
            try sender.send(bytes: [0], fds: (0..<fdCount).map { offeredFDs[$0 % offeredFDs.count] })
            _ = try receiver.receive(count: 1, fds: &fds)
            guard fds.count == fdCount else {
                return "\(fdCount) fds sent, \(fds.count) received"
            }
        }
        pending += bytes
        while true {
            if pendingHeader == nil {
                guard pending.count >= MessageHeader.sizeBytes else { return nil }
                let header = pending.withUnsafeBytes { MessageHeader.decode($0) }
                do {
                    try MessageCodec.validate(header)
                } catch {
                    record(error)
                    guard error.requiresDisconnect else { return "header error \(error) lets the connection go on" }
                    reconnect()
                    return nil
                }
                pendingHeader = header
                pending.removeFirst(MessageHeader.sizeBytes)
            }
            guard let header = pendingHeader, pending.count >= Int(header.size) else { return nil }
            let payload = Array(pending.prefix(Int(header.size)))
            pending.removeFirst(Int(header.size))
            pendingHeader = nil
            if let violation = handle(header, payload: payload, fds: &fds) { return violation }
            fds = ReceivedFileDescriptors()  // unused fds of the first message are closed here
        }
    }

    /// libFuzzer's view: `data` is a sequence of records `[fds u8][header 12 bytes][payload]`,
    /// the payload as long as the header says (or what is left). Low 4 bits of `fds`: how many
    /// descriptors ride with the record.
    public func run(records data: [UInt8]) throws -> String? {
        defer { reconnect() }
        var offset = 0
        while offset + 1 + MessageHeader.sizeBytes <= data.count {
            let fdCount = Int(data[offset] & 0xf)
            offset += 1
            let header = data[offset...].withUnsafeBytes { MessageHeader.decode($0) }
            let end = min(data.count, offset + MessageHeader.sizeBytes + Int(min(header.size, 1 << 16)))
            if let violation = try feed(Array(data[offset..<end]), fdCount: fdCount) { return violation }
            offset = end
        }
        return nil
    }

    private func record(_ error: VhostUserError) {
        let kind = switch error {
        case .disconnected: "disconnected"
        case .io: "io"
        case .badHeader: "badHeader"
        case .badPayloadSize: "badPayloadSize"
        case .unknownRequest: "unknownRequest"
        case .unsupportedRequest: "unsupportedRequest"
        case .invalidRequest: "invalidRequest"
        case .protocolViolation: "protocolViolation"
        }
        errors[kind, default: 0] += 1
    }

    private func handle(_ header: MessageHeader, payload: [UInt8], fds: inout ReceivedFileDescriptors) -> String? {
        let decoded = payload.withUnsafeBytes { raw in
            Result { () throws(VhostUserError) in try MessageCodec.decode(header, payload: raw) }
        }
        let message: FrontendMessage
        switch decoded {
        case .success(let m): message = m
        case .failure(let error):
            record(error)
            if error.description.isEmpty { return "an error without a description" }
            if error.requiresDisconnect { reconnect() }
            return nil
        }
        messagesHandled += 1
        let outcome: SessionOutcome
        do {
            outcome = try session.handle(message, fds: &fds)
        } catch {
            record(error)
            if error.description.isEmpty { return "an error without a description" }
            if error.requiresDisconnect { reconnect() }
            return sessionViolation()
        }
        for effect in outcome.effects {
            switch effect {
            case .startVring(let start):
                ringsStarted += 1
                guard deviceActive else { return "ring \(start.index) started on an inactive device" }
                guard start.index < Self.queueCount else { return "started ring \(start.index)" }
                let size = UInt64(start.layout.size)
                guard size > 0, size <= UInt64(VirtioLimits.queueSizeMax), size & (size - 1) == 0 else {
                    return "started ring of size \(size)"
                }
                guard start.memory.contains(start.layout.descriptorTable, length: 16 * size),
                      start.memory.contains(start.layout.availRing, length: 6 + 2 * size),
                      start.memory.contains(start.layout.usedRing, length: 6 + 8 * size)
                else { return "ring \(start.index) started outside guest memory: \(start.layout)" }
            case .stopVring(let index):
                guard index < Self.queueCount else { return "stopped ring \(index)" }
                _ = session.ringStopped(index, nextAvail: nil)
            case .setCall(let index, _), .setEnabled(let index, _):
                guard index < Self.queueCount else { return "changed ring \(index)" }
            case .publishMemory, .migrationLogging:
                break
            case .activateDevice:
                // The device is activated once before its first ring runs, and only then.
                guard !deviceActive else { return "device activated twice" }
                deviceActive = true
            case .deactivateDevice:
                guard deviceActive, session.startedRings.isEmpty else { return "device deactivated with rings running" }
                deviceActive = false
            }
        }
        switch outcome.reply {
        case .none, .u64:
            break
        case .vringBase(let index):
            guard index < Self.queueCount, !session.vrings[index].started else { return "GET_VRING_BASE reply for ring \(index)" }
        case .bytes(let bytes, let replyFDs):
            for fd in replyFDs { _ = Glibc.close(fd) }
            guard bytes.count >= MessageHeader.sizeBytes else { return "reply of \(bytes.count) bytes" }
            let reply = bytes.withUnsafeBytes { MessageHeader.decode($0) }
            guard reply.flags == MessageHeader.version | MessageHeader.replyFlag, reply.request == header.request,
                  Int(reply.size) == bytes.count - MessageHeader.sizeBytes
            else { return "malformed reply \(reply) of \(bytes.count) bytes to \(header)" }
        }
        return sessionViolation()
    }

    /// A started ring has a size and an address; the session has one configuration per queue.
    private func sessionViolation() -> String? {
        guard session.vrings.count == Self.queueCount else { return "\(session.vrings.count) vrings" }
        for (i, ring) in session.vrings.enumerated() where ring.started && (ring.size == nil || ring.address == nil) {
            return "ring \(i) started without size or address"
        }
        return nil
    }
}

/// A page store that holds nothing: the control path never reads or writes pages.
final class NullPageStore: PageStore {
    let capacityBytes: UInt64
    init(capacityBytes: UInt64) { self.capacityBytes = capacityBytes }
    func read(at offset: UInt64, into destination: UnsafeMutableRawBufferPointer) throws(PageStoreError) {
        destination.initializeMemory(as: UInt8.self, repeating: 0)
    }
    func write(at offset: UInt64, from source: UnsafeRawBufferPointer) throws(PageStoreError) {}
    func discard(at offset: UInt64, length: UInt64) throws(PageStoreError) {}
    func flush() throws(PageStoreError) {}
    var residentBytes: UInt64 { 0 }
}
