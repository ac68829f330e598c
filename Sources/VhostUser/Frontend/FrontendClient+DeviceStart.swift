import GuestMemory
import LinuxSystem
import Virtio

extension FrontendClient {
    /// Starts the device with `queues` fresh queues of `queueSize` entries and returns one
    /// driver per queue. This is what QEMU 7.2's `vhost_user_blk_start` sends, in order
    /// (`proxy-boot-qemu72.log`, second start):
    ///
    /// 1. SET_FEATURES with the acked bits, which include PROTOCOL_FEATURES (bit 30).
    /// 2. GET_INFLIGHT_FD and SET_INFLIGHT_FD, when INFLIGHT_SHMFD is negotiated.
    /// 3. SET_VRING_CALL (and SET_VRING_ERR) for each queue.
    /// 4. SET_FEATURES again.
    /// 5. The memory table, on the first start only: ADD_MEM_REG per region with NEED_REPLY
    ///    under CONFIGURE_MEM_SLOTS, else one SET_MEM_TABLE.
    /// 6. For each queue: SET_VRING_NUM, SET_VRING_BASE 0, SET_VRING_ADDR (frontend virtual
    ///    addresses), SET_VRING_KICK.
    /// 7. SET_VRING_ENABLE 1 for each queue.
    ///
    /// Rings are zeroed. Their guest RAM is carved on the first start of each queue index and
    /// reused after that. Drivers returned by an earlier start are invalid once the device has
    /// been stopped and started again.
    public func start(queues: Int, queueSize: UInt16, queueOptions: BlockQueueOptions = BlockQueueOptions(),
                      inflight: InflightBuffer? = nil) throws(FrontendError) -> [BlockQueueClient] {
        guard config != nil else { throw .invalidState("start() before negotiate()") }
        guard queues >= 1, queues <= queueCountMax else {
            throw .invalidArgument("\(queues) queues requested; the backend supports 1...\(queueCountMax)")
        }
        guard queueSize > 0, queueSize <= VirtioLimits.queueSizeMax, queueSize & (queueSize - 1) == 0 else {
            throw .invalidArgument("queue size \(queueSize) is not a power of two ≤ \(VirtioLimits.queueSizeMax)")
        }
        let features = try featuresToAck()
        if queueOptions.descriptorLayout == .indirect && !features.contains(.indirectDescriptors) {
            throw .missingFeature("VIRTIO_RING_F_INDIRECT_DESC, which indirect descriptor layout needs")
        }
        let slotCount = queueOptions.slotCount ?? Int(queueSize)
        guard slotCount >= 1, slotCount <= Int(queueSize) else {
            throw .invalidArgument("\(slotCount) slots for a ring of \(queueSize)")
        }
        guard queueOptions.dataBytesPerSlot >= 1,
              queueOptions.dataBytesPerSlot <= BlockQueueOptions.dataBytesPerSlotMax
        else {
            throw .invalidArgument("data buffer of \(queueOptions.dataBytesPerSlot) bytes per slot")
        }
        let segmentBytes = segmentBytesMax(features: features, options: queueOptions)
        // One extra segment: a raw request may split its buffer into readable and writable parts.
        let segmentsMax = (queueOptions.dataBytesPerSlot + Int(segmentBytes) - 1) / Int(segmentBytes) + 1
        var clients: [BlockQueueClient] = []
        for index in 0..<queues {
            let area: BlockQueueArea
            if let existing = queueAreas[index], existing.fits(queueSize: queueSize, slotCount: slotCount,
                                                              dataBytesPerSlot: queueOptions.dataBytesPerSlot,
                                                              dataSegmentsMax: segmentsMax) {
                area = existing
            } else {
                area = try BlockQueueArea.carve(from: guestRAM, queueSize: queueSize, slotCount: slotCount,
                                                dataBytesPerSlot: queueOptions.dataBytesPerSlot,
                                                dataSegmentsMax: segmentsMax)
                queueAreas[index] = area
            }
            clients.append(try BlockQueueClient(index: index, guestRAM: guestRAM, area: area, options: queueOptions,
                                                eventIndex: features.contains(.eventIndex),
                                                segmentBytesMax: segmentBytes))
        }
        try startDevice(clients, features: features, bases: clients.map { _ in 0 }, inflight: inflight)
        return clients
    }

    /// Starts the device again over existing queues, keeping their rings, eventfds and
    /// requests in flight. Use it after `stop()` on the same connection, or on a new
    /// connection after a backend restart (pass the old client's `inflight`).
    ///
    /// `vringBases` defaults to each ring's current `used->idx`. That is QEMU's choice after a
    /// lost connection (`virtio_queue_restore_last_avail_idx`): the backend must then find
    /// whatever was in flight through the inflight buffer. After a clean `stop()`, pass the
    /// bases it returned.
    public func start(resuming queues: [BlockQueueClient], vringBases: [UInt16]? = nil,
                      inflight: InflightBuffer? = nil) throws(FrontendError) {
        guard config != nil else { throw .invalidState("start() before negotiate()") }
        guard !queues.isEmpty, queues.count <= queueCountMax else {
            throw .invalidArgument("\(queues.count) queues; the backend supports 1...\(queueCountMax)")
        }
        guard queues.allSatisfy({ $0.guestRAM === guestRAM }) else {
            throw .invalidArgument("resumed queues must live in this client's guest RAM")
        }
        guard vringBases == nil || vringBases!.count == queues.count else {
            throw .invalidArgument("\(vringBases!.count) vring bases for \(queues.count) queues")
        }
        let features = try featuresToAck()
        guard queues.allSatisfy({ $0.eventIndex == features.contains(.eventIndex) }) else {
            throw .invalidState("EVENT_IDX negotiation differs from the one the queues were built with")
        }
        for queue in queues { queueAreas[queue.index] = queue.area }
        let bases = vringBases ?? queues.map { $0.driver.deviceUsedIndex }
        try startDevice(queues, features: features, bases: bases, inflight: inflight)
    }

    /// Stops every started queue the way QEMU 7.2 does at guest reset or shutdown. It sends
    /// SET_VRING_ENABLE 0 for all of them, then GET_VRING_BASE for each, which is the barrier
    /// after which the backend must not touch the rings. Returns the bases in queue order.
    @discardableResult
    public func stop() throws(FrontendError) -> [UInt32] {
        let queues = startedQueues
        for index in queues {
            try sendControl(.setVringEnable(VringState(index: UInt32(index), num: 0)))
        }
        var bases: [UInt32] = []
        for index in queues { bases.append(try getVringBase(index)) }
        startedQueues = []
        return bases
    }

    /// Stops one queue: SET_VRING_ENABLE 0, then GET_VRING_BASE. Returns the base, which is
    /// the next avail index the backend would have consumed.
    @discardableResult
    public func stop(queue index: Int) throws(FrontendError) -> UInt32 {
        guard startedQueues.contains(index) else { throw .invalidState("queue \(index) is not started") }
        try sendControl(.setVringEnable(VringState(index: UInt32(index), num: 0)))
        let base = try getVringBase(index)
        startedQueues.removeAll { $0 == index }
        return base
    }

    // MARK: Steps

    /// The bits SET_FEATURES carries: ours AND the backend's, plus PROTOCOL_FEATURES.
    func featuresToAck() throws(FrontendError) -> VirtioFeatures {
        var features = backendFeatures.intersection(options.virtioFeatures)
        guard features.contains(.version1) else { throw .missingFeature("VIRTIO_F_VERSION_1 in \(backendFeatures)") }
        features.insert(.protocolFeatures)
        return features
    }

    /// The largest data segment: the caller's choice, capped by `size_max` if SIZE_MAX was
    /// acked (Linux never builds a segment larger than `size_max`).
    private func segmentBytesMax(features: VirtioFeatures, options: BlockQueueOptions) -> UInt64 {
        var bytes = UInt64(options.dataSegmentBytes ?? options.dataBytesPerSlot)
        if features.contains(.blockSizeMax), let sizeMax = config?.sizeMax, sizeMax > 0 {
            bytes = min(bytes, UInt64(sizeMax))
        }
        return max(bytes, 512)
    }

    private func startDevice(_ queues: [BlockQueueClient], features: VirtioFeatures, bases: [UInt16],
                             inflight given: InflightBuffer?) throws(FrontendError) {
        guard startedQueues.isEmpty else {
            throw .invalidState("queues \(startedQueues) are still started; stop() first")
        }
        try sendControl(.setFeatures(features.rawValue))
        ackedFeatures = features
        try setUpInflight(queueCount: queues.count, queueSize: queues[0].queueSize, given: given)
        for queue in queues {
            let payload = VringDescriptorPayload(index: UInt32(queue.index), hasFileDescriptor: true)
            try sendControl(.setVringCall(payload), fds: [queue.call.rawValue])
            if options.sendVringErr {
                try sendControl(.setVringErr(payload), fds: [queue.errorNotifier.rawValue])
            }
        }
        try sendControl(.setFeatures(features.rawValue))
        if !memoryTableSent { try sendMemoryTable() }
        for (queue, base) in zip(queues, bases) {
            try startRing(queue, base: base)
        }
        for queue in queues {
            try sendControl(.setVringEnable(VringState(index: UInt32(queue.index), num: 1)))
        }
        startedQueues = queues.map(\.index)
        if options.synchronizeAfterStart {
            // Like QEMU's enforce_reply: the reply proves every earlier message was processed.
            backendFeatures = VirtioFeatures(rawValue: try requestU64(.getFeatures))
        }
    }

    private func setUpInflight(queueCount: Int, queueSize: UInt16, given: InflightBuffer?) throws(FrontendError) {
        guard options.useInflight, protocolFeatures.contains(.inflightSharedMemory) else { return }
        var buffer = given
        if buffer == nil, let current = inflight, current.area.queueCount == UInt16(queueCount),
           current.area.queueSize == queueSize {
            buffer = current
        }
        if buffer == nil {
            let ask = InflightArea(mmapSize: 0, mmapOffset: 0, queueCount: UInt16(queueCount), queueSize: queueSize)
            var reply = try request(.getInflightFD(ask))
            let area = try reply.inflightArea()
            if area.mmapSize > 0 {
                guard let fd = reply.takeFileDescriptor() else {
                    throw .badReplyPayload(request: "GET_INFLIGHT_FD", size: reply.payload.count,
                                           expected: "an fd with a nonzero mmap_size")
                }
                buffer = try InflightBuffer(area: area, fd: fd)
            }
        }
        inflight = buffer
        guard let buffer else { return }
        try sendControl(.setInflightFD(buffer.area), fds: [buffer.file.rawValue])
    }

    private func sendMemoryTable() throws(FrontendError) {
        let regions = guestRAM.regionLayouts
        let fd = guestRAM.file.rawValue
        if protocolFeatures.contains(.configureMemSlots) && !options.forceSetMemTable {
            if let slots = memorySlotsMax, UInt64(regions.count) > slots {
                throw .invalidArgument("\(regions.count) memory regions but the backend has \(slots) slots")
            }
            for region in regions {
                try sendControl(.addMemReg(region), fds: [fd], qemuNeedsReply: true)
            }
        } else {
            try sendControl(.setMemTable(regions), fds: regions.map { _ in fd }, qemuNeedsReply: true)
        }
        memoryTableSent = true
    }

    private func startRing(_ queue: BlockQueueClient, base: UInt16) throws(FrontendError) {
        let index = UInt32(queue.index)
        let layout = queue.area.ringLayout
        try sendControl(.setVringNum(VringState(index: index, num: UInt32(layout.size))))
        try sendControl(.setVringBase(VringState(index: index, num: UInt32(base))))
        let address = VringAddress(index: index, flags: 0,
                                   descriptorTable: guestRAM.frontendAddress(of: layout.descriptorTable),
                                   usedRing: guestRAM.frontendAddress(of: layout.usedRing),
                                   availRing: guestRAM.frontendAddress(of: layout.availRing),
                                   logGuestAddress: layout.usedRing)
        try sendControl(.setVringAddr(address))
        let kick = VringDescriptorPayload(index: index, hasFileDescriptor: true)
        try sendControl(.setVringKick(kick), fds: [queue.kick.rawValue])
    }

    private func getVringBase(_ index: Int) throws(FrontendError) -> UInt32 {
        let state = try request(.getVringBase(VringState(index: UInt32(index), num: 0))).vringState()
        guard state.index == UInt32(index) else {
            throw .badReplyPayload(request: "GET_VRING_BASE", size: VringState.sizeBytes,
                                   expected: "queue index \(index), got \(state.index)")
        }
        return state.num
    }
}
