import GuestMemory
import LinuxSystem
import Logging
import Virtio

/// The vhost-user protocol state of one frontend connection, as a state machine: it takes a
/// decoded message and its fds and returns what to do (effects and a reply). It performs no
/// socket I/O and starts no threads; it does map the memory the frontend shares, because a
/// mapping is part of the state it hands to the data threads.
///
/// Ordering rules it enforces are QEMU 7.2's, as traced in research/vhost-user.md §1.4.
public struct BackendSession {
    public let device: any VhostUserDevice
    let logger: Logger

    /// Protocol features we offer. Not offered: BACKEND_REQ (no online resize yet), STATUS,
    /// PAGEFAULT, INBAND_NOTIFICATIONS (research §1.3).
    public static let offeredProtocolFeatures: ProtocolFeatures = [
        .multiQueue, .logSharedMemory, .replyAck, .config, .inflightSharedMemory, .resetDevice, .configureMemSlots,
    ]
    /// Transport bits the protocol layer itself contributes.
    public static let transportFeatures: VirtioFeatures = [
        .version1, .indirectDescriptors, .eventIndex, .logAll, .protocolFeatures,
    ]

    public private(set) var ownerSet = false
    public private(set) var ackedFeatures: VirtioFeatures = []
    public private(set) var protocolFeatures: ProtocolFeatures = []
    public private(set) var memory = GuestMemoryMap.empty
    public private(set) var log: DirtyLog?
    public private(set) var vrings: [VringConfiguration]
    private var inflightArea: SharedMemoryArea?
    private var inflightQueueSize: UInt16 = 0
    /// True while the device is active (from the first ring start to the last ring stop).
    public private(set) var deviceActive = false
    /// True once this connection handed the device off at a migration switchover.
    public private(set) var handedOff = false

    public init(device: any VhostUserDevice, logger: Logger) {
        self.device = device
        self.logger = logger
        vrings = Array(repeating: VringConfiguration(), count: device.queueCountMax)
    }

    public var offeredFeatures: VirtioFeatures { device.features.union(Self.transportFeatures) }

    /// The dirty log the data threads should write, if migration logging is on.
    var activeLog: DirtyLog? { ackedFeatures.contains(.logAll) ? log : nil }

    /// True if REPLY_ACK was negotiated (so NEED_REPLY gets an ack).
    public var replyAckNegotiated: Bool { protocolFeatures.contains(.replyAck) }

    /// Indices of rings currently started.
    public var startedRings: [Int] { vrings.indices.filter { vrings[$0].started } }

    /// Handles one message. Throws if the message is invalid; `requiresDisconnect` on the
    /// error says whether the connection survives.
    public mutating func handle(_ message: FrontendMessage, fds: inout ReceivedFileDescriptors) throws(VhostUserError) -> SessionOutcome {
        var outcome = SessionOutcome()
        switch message {
        case .getFeatures:
            outcome.reply = .u64(offeredFeatures.rawValue)
        case .setFeatures(let raw):
            try setFeatures(VirtioFeatures(rawValue: raw), &outcome)
        case .getProtocolFeatures:
            outcome.reply = .u64(Self.offeredProtocolFeatures.rawValue)
        case .setProtocolFeatures(let raw):
            let requested = ProtocolFeatures(rawValue: raw)
            guard Self.offeredProtocolFeatures.isSuperset(of: requested) else {
                throw .invalidRequest("protocol features \(requested) include some we did not offer")
            }
            protocolFeatures = requested
        case .setOwner:
            // Spec: "Issued when a new connection is established"; a repeat is harmless.
            ownerSet = true
        case .resetOwner, .resetDevice:
            resetDevice(&outcome)
        case .getQueueNum:
            outcome.reply = .u64(UInt64(device.queueCountMax))
        case .getMaxMemSlots:
            outcome.reply = .u64(VhostUserLimits.memorySlotsMax)
        case .setMemTable(let regions):
            try setMemTable(regions, fds: &fds, &outcome)
        case .addMemReg(let layout):
            try addMemoryRegion(layout, fds: &fds, &outcome)
        case .remMemReg(let layout):
            guard let map = memory.removing(layout) else {
                throw .invalidRequest("REM_MEM_REG for \(layout), which is not mapped")
            }
            memory = map
            outcome.effects.append(.publishMemory(memory, log: activeLog))
        case .setLogBase(let area):
            try setLogBase(area, fds: &fds, &outcome)
        case .setLogFD:
            _ = fds.take(0)  // QEMU 7.2 never sends it; we do not use it.
        case .setVringNum(let state):
            let index = try vringIndex(state.index)
            guard !vrings[index].started else { throw .invalidRequest("SET_VRING_NUM on started ring \(index)") }
            guard state.num > 0, state.num <= UInt32(VirtioLimits.queueSizeMax), state.num & (state.num - 1) == 0 else {
                throw .invalidRequest("ring size \(state.num) is not a power of two ≤ \(VirtioLimits.queueSizeMax)")
            }
            vrings[index].size = UInt16(state.num)
        case .setVringBase(let state):
            let index = try vringIndex(state.index)
            guard !vrings[index].started else { throw .invalidRequest("SET_VRING_BASE on started ring \(index)") }
            vrings[index].base = UInt16(truncatingIfNeeded: state.num)
        case .setVringAddr(let address):
            let index = try vringIndex(address.index)
            if vrings[index].started, let old = vrings[index].address,
               old.descriptorTable != address.descriptorTable || old.availRing != address.availRing
                || old.usedRing != address.usedRing {
                throw .invalidRequest("SET_VRING_ADDR moves started ring \(index)")
            }
            // A flags-only change (VHOST_VRING_F_LOG at migration start) on a running ring is
            // fine: we log used-ring writes whenever logging is on.
            vrings[index].address = address
        case .setVringKick(let payload):
            try setVringKick(payload, fds: &fds, &outcome)
        case .setVringCall(let payload):
            let index = try vringIndex(payload.index)
            let call = try notifier(payload, fds: &fds)
            vrings[index].call = call
            if vrings[index].started { outcome.effects.append(.setCall(index: index, call)) }
        case .setVringErr(let payload):
            let index = try vringIndex(payload.index)
            vrings[index].error = try notifier(payload, fds: &fds)
        case .setVringEnable(let state):
            let index = try vringIndex(state.index)
            guard state.num <= 1 else { throw .invalidRequest("SET_VRING_ENABLE \(state.num)") }
            vrings[index].enabled = state.num == 1
            if vrings[index].started { outcome.effects.append(.setEnabled(index: index, state.num == 1)) }
        case .getVringBase(let state):
            let index = try vringIndex(state.index, disconnectIfInvalid: true)
            if vrings[index].started {
                // Spec: "stop ring upon receiving VHOST_USER_GET_VRING_BASE" — and drain what
                // was popped before replying; QEMU treats the reply as the stop barrier.
                vrings[index].started = false
                vrings[index].kick = nil
                outcome.effects.append(.stopVring(index: index))
                deactivateIfIdle(&outcome)
            }
            outcome.reply = .vringBase(index: index)
        case .setBackendReqFD:
            _ = fds.take(0)  // BACKEND_REQ is not offered; accept and close.
        case .getConfig(let access):
            outcome.reply = .bytes(configReply(access), fds: [])
        case .setConfig(let access):
            guard access.flags == 0 else {
                throw .invalidRequest("SET_CONFIG with flags \(access.flags) (only frontend writes are supported)")
            }
            if let why = device.writeConfig(offset: Int(access.offset), bytes: access.bytes) {
                throw .invalidRequest("SET_CONFIG: \(why)")
            }
        case .getInflightFD(let area):
            outcome.reply = try getInflightFD(area)
        case .setInflightFD(let area):
            try setInflightFD(area, fds: &fds)
        case .setStatus, .getStatus, .unsupported:
            throw .unsupportedRequest(message.request.description)
        }
        return outcome
    }

    /// The final avail index of a ring that just stopped (or was never started).
    public mutating func ringStopped(_ index: Int, nextAvail: UInt16?) -> UInt16 {
        if let nextAvail { vrings[index].base = nextAvail }
        return vrings[index].base
    }

    private func vringIndex(_ raw: UInt32, disconnectIfInvalid: Bool = false) throws(VhostUserError) -> Int {
        guard raw < UInt32(vrings.count) else {
            let why = "queue index \(raw) ≥ \(vrings.count) queues"
            throw disconnectIfInvalid ? .protocolViolation(why) : .invalidRequest(why)
        }
        return Int(raw)
    }

    private mutating func setFeatures(_ features: VirtioFeatures, _ outcome: inout SessionOutcome) throws(VhostUserError) {
        guard offeredFeatures.isSuperset(of: features) else {
            throw .invalidRequest("features \(features) include some we did not offer (\(offeredFeatures))")
        }
        let loggingChanged = features.contains(.logAll) != ackedFeatures.contains(.logAll)
        ackedFeatures = features
        // SET_FEATURES must never stop or disable rings (rust-vmm PR #210): QEMU sends it twice
        // per start and again to toggle LOG_ALL while rings run.
        if loggingChanged {
            logger.info("dirty logging \(features.contains(.logAll) ? "on" : "off")")
            outcome.effects.append(.publishMemory(memory, log: activeLog))
            outcome.effects.append(.migrationLogging(features.contains(.logAll)))
        }
    }

    /// After a ring stopped: if none runs any more, the device goes idle. With migration
    /// logging on, that is the switchover (QEMU stops every ring, then reads the final state).
    /// A stop without logging (a pause) is not a handoff.
    private mutating func deactivateIfIdle(_ outcome: inout SessionOutcome) {
        guard deviceActive, startedRings.isEmpty else { return }
        deviceActive = false
        let handoff = ackedFeatures.contains(.logAll)
        if handoff { handedOff = true }
        outcome.effects.append(.deactivateDevice(handoff: handoff))
    }

    private mutating func resetDevice(_ outcome: inout SessionOutcome) {
        for index in startedRings { outcome.effects.append(.stopVring(index: index)) }
        for index in startedRings { vrings[index].started = false }
        deactivateIfIdle(&outcome)
        vrings = Array(repeating: VringConfiguration(), count: vrings.count)
        ackedFeatures = []
    }

    private mutating func setMemTable(_ regions: [MemoryRegionLayout], fds: inout ReceivedFileDescriptors,
                                      _ outcome: inout SessionOutcome) throws(VhostUserError) {
        guard fds.count == regions.count else {
            throw .invalidRequest("SET_MEM_TABLE with \(regions.count) regions but \(fds.count) fds")
        }
        var mapped: [GuestMemoryRegion] = []
        for (i, layout) in regions.enumerated() {
            guard let fd = fds.take(i) else { throw .invalidRequest("SET_MEM_TABLE region \(i) has no fd") }
            do {
                mapped.append(try GuestMemoryRegion(layout: layout, fd: fd))
            } catch {
                throw .invalidRequest(error.description)
            }
        }
        do {
            memory = try GuestMemoryMap(regions: mapped)
        } catch {
            throw .invalidRequest(error.description)
        }
        logger.debug("memory table: \(regions.map(\.description).joined(separator: " "))")
        outcome.effects.append(.publishMemory(memory, log: activeLog))
    }

    private mutating func addMemoryRegion(_ layout: MemoryRegionLayout, fds: inout ReceivedFileDescriptors,
                                          _ outcome: inout SessionOutcome) throws(VhostUserError) {
        guard let fd = fds.take(0) else { throw .invalidRequest("ADD_MEM_REG without an fd") }
        guard UInt64(memory.regions.count) < VhostUserLimits.memorySlotsMax else {
            throw .invalidRequest("ADD_MEM_REG beyond \(VhostUserLimits.memorySlotsMax) slots")
        }
        do {
            memory = try memory.adding(GuestMemoryRegion(layout: layout, fd: fd))
        } catch {
            throw .invalidRequest(error.description)
        }
        logger.debug("added memory region \(layout)")
        outcome.effects.append(.publishMemory(memory, log: activeLog))
    }

    private mutating func setLogBase(_ area: LogArea, fds: inout ReceivedFileDescriptors,
                                     _ outcome: inout SessionOutcome) throws(VhostUserError) {
        guard let fd = fds.take(0) else { throw .invalidRequest("SET_LOG_BASE without an fd") }
        guard area.mmapSize > 0, area.mmapSize <= VhostUserLimits.logBytesMax else {
            throw .invalidRequest("dirty log of \(area.mmapSize) bytes")
        }
        do {
            log = try DirtyLog(fd: fd, size: area.mmapSize, offset: area.mmapOffset)
        } catch {
            throw .invalidRequest("cannot map the dirty log: \(error)")
        }
        logger.info("dirty log set: \(area.mmapSize) bytes")
        // QEMU frees the old log after our reply, so the data threads must have switched to the
        // new one before we answer: publishMemory waits for them.
        outcome.effects.append(.publishMemory(memory, log: activeLog))
        if protocolFeatures.contains(.logSharedMemory) { outcome.reply = .u64(0) }
    }

    private mutating func setVringKick(_ payload: VringDescriptorPayload, fds: inout ReceivedFileDescriptors,
                                       _ outcome: inout SessionOutcome) throws(VhostUserError) {
        let index = try vringIndex(payload.index)
        let kick = try notifier(payload, fds: &fds)
        if vrings[index].started {
            throw .invalidRequest("SET_VRING_KICK on running ring \(index)")
        }
        vrings[index].kick = kick
        vrings[index].kickPolled = kick == nil
        guard let size = vrings[index].size, let address = vrings[index].address else {
            throw .invalidRequest("SET_VRING_KICK on ring \(index) before its size and address")
        }
        let layout: SplitQueueLayout
        do {
            layout = SplitQueueLayout(
                size: size,
                descriptorTable: try memory.guestAddress(of: address.descriptorTable, length: UInt64(size) * 16),
                availRing: try memory.guestAddress(of: address.availRing, length: 6 + 2 * UInt64(size)),
                usedRing: try memory.guestAddress(of: address.usedRing, length: 6 + 8 * UInt64(size)))
        } catch {
            throw .invalidRequest("ring \(index): \(error)")
        }
        // Without PROTOCOL_FEATURES a ring is enabled as soon as it starts (spec, "Ring states").
        let enabled = ackedFeatures.contains(.protocolFeatures) ? vrings[index].enabled : true
        var inflight: InflightQueue?
        if let inflightArea, inflightQueueSize == size {
            inflight = InflightQueue(area: inflightArea, queueIndex: index, queueSize: size)
        }
        if !deviceActive {
            deviceActive = true
            outcome.effects.append(.activateDevice(afterHandoff: handedOff))
        }
        vrings[index].started = true
        outcome.effects.append(.startVring(VringStart(
            index: index, layout: layout, base: vrings[index].base, eventIndex: ackedFeatures.contains(.eventIndex),
            kick: kick, call: vrings[index].call, enabled: enabled, memory: memory, log: activeLog,
            inflight: inflight, error: vrings[index].error)))
    }

    private func notifier(_ payload: VringDescriptorPayload, fds: inout ReceivedFileDescriptors) throws(VhostUserError) -> EventNotifier? {
        guard payload.hasFileDescriptor else { return nil }
        guard let fd = fds.take(0) else { throw .invalidRequest("vring \(payload.index): fd flag set but no fd attached") }
        return EventNotifier(fd)
    }

    private func configReply(_ access: ConfigAccess) -> [UInt8] {
        let space = device.configSpace()
        let offset = Int(access.offset)
        let size = Int(access.size)
        // QEMU asks for 36, 48 or 57 bytes from offset 0; fields past what we encode read as 0.
        guard offset <= VhostUserLimits.configBytesMax, size <= VhostUserLimits.configBytesMax - offset, size > 0 else {
            return MessageCodec.replyConfig(nil)
        }
        var window = [UInt8](repeating: 0, count: size)
        for i in 0..<size where offset + i < space.count { window[i] = space[offset + i] }
        return MessageCodec.replyConfig(ConfigAccess(offset: access.offset, size: access.size, flags: access.flags,
                                                     bytes: window))
    }

    private mutating func getInflightFD(_ area: InflightArea) throws(VhostUserError) -> SessionReply {
        guard area.queueCount > 0, Int(area.queueCount) <= vrings.count,
              area.queueSize > 0, area.queueSize <= VirtioLimits.queueSizeMax
        else { throw .protocolViolation("GET_INFLIGHT_FD for \(area.queueCount) queues of \(area.queueSize)") }
        let bytes = InflightQueue.regionBytes(queueSize: area.queueSize) * Int(area.queueCount)
        do {
            let fd = try MemFD.create(name: "memx-inflight", size: bytes)
            inflightArea = try SharedMemoryArea(fd: fd, size: UInt64(bytes), offset: 0)
            inflightQueueSize = area.queueSize
            let reply = MessageCodec.replyInflight(InflightArea(mmapSize: UInt64(bytes), mmapOffset: 0,
                                                                queueCount: area.queueCount, queueSize: area.queueSize))
            // The fd is sent with the reply and then closed by the server.
            return .bytes(reply, fds: [fd.release()])
        } catch {
            throw .protocolViolation("cannot create the inflight region: \(error)")
        }
    }

    private mutating func setInflightFD(_ area: InflightArea, fds: inout ReceivedFileDescriptors) throws(VhostUserError) {
        guard let fd = fds.take(0) else { throw .invalidRequest("SET_INFLIGHT_FD without an fd") }
        guard area.queueSize > 0, area.queueSize <= VirtioLimits.queueSizeMax, area.queueCount > 0,
              area.mmapSize >= UInt64(InflightQueue.regionBytes(queueSize: area.queueSize)) * UInt64(area.queueCount)
        else { throw .invalidRequest("SET_INFLIGHT_FD area too small: \(area)") }
        do {
            inflightArea = try SharedMemoryArea(fd: fd, size: area.mmapSize, offset: area.mmapOffset)
            inflightQueueSize = area.queueSize
        } catch {
            throw .invalidRequest("cannot map the inflight region: \(error)")
        }
    }
}
