import Virtio

extension FrontendClient {
    /// Runs the handshake QEMU 7.2 performs when `vhost-user-blk-pci` is realized, in the same
    /// order as `proxy-boot-qemu72.log`, and returns the decoded config space:
    ///
    /// 1. GET_FEATURES. The backend must offer `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30).
    /// 2. GET_PROTOCOL_FEATURES, then SET_PROTOCOL_FEATURES with the AND of both sets.
    ///    CONFIG must survive, because QEMU fails realize without it.
    /// 3. GET_QUEUE_NUM (with MQ), then GET_MAX_MEM_SLOTS (with CONFIGURE_MEM_SLOTS).
    /// 4. SET_OWNER, then GET_FEATURES again.
    /// 5. GET_CONFIG at offset 0 for `options.configSizeBytes` bytes. The answer must have
    ///    exactly that size, as QEMU checks.
    ///
    /// SET_BACKEND_REQ_FD is skipped, because BACKEND_REQ is never asked for. The masked
    /// SET_VRING_CALL/ERR that QEMU sends at init are sent by `start`, once the queue count is
    /// known.
    @discardableResult
    public func negotiate() throws(FrontendError) -> BlockConfigSpace {
        guard config == nil else { throw .invalidState("negotiate() was already called on this connection") }
        backendFeatures = VirtioFeatures(rawValue: try requestU64(.getFeatures))
        guard backendFeatures.contains(.protocolFeatures) else {
            throw .missingFeature("VHOST_USER_F_PROTOCOL_FEATURES (bit 30) in GET_FEATURES \(backendFeatures)")
        }

        backendProtocolFeatures = ProtocolFeatures(rawValue: try requestU64(.getProtocolFeatures))
        let agreed = backendProtocolFeatures.intersection(options.protocolFeatures)
        guard agreed.contains(.config) else {
            throw .missingFeature("VHOST_USER_PROTOCOL_F_CONFIG (protocol features \(backendProtocolFeatures))")
        }
        try send(.setProtocolFeatures(agreed.rawValue))
        // REPLY_ACK applies from here on.
        protocolFeatures = agreed

        if agreed.contains(.multiQueue) {
            let count = try requestU64(.getQueueNum)
            guard count >= 1, count <= UInt64(VirtioLimits.queueSizeMax) else {
                throw .badReplyPayload(request: "GET_QUEUE_NUM", size: 8,
                                       expected: "a queue count in 1...1024, got \(count)")
            }
            queueCountMax = Int(count)
        } else {
            queueCountMax = 1
        }
        if agreed.contains(.configureMemSlots) {
            memorySlotsMax = try requestU64(.getMaxMemSlots)
        }

        try sendControl(.setOwner)
        backendFeatures = VirtioFeatures(rawValue: try requestU64(.getFeatures))

        let decoded = try readConfig(offset: 0, size: options.configSizeBytes)
        config = decoded
        return decoded
    }

    /// Sends GET_CONFIG for `size` bytes at `offset` and decodes the answer as
    /// `virtio_blk_config`. This only makes sense at offset 0. The raw bytes are kept in
    /// `configBytes`.
    public func readConfig(offset: UInt32 = 0, size: UInt32) throws(FrontendError) -> BlockConfigSpace {
        guard size > 0, Int(size) <= VhostUserLimits.configBytesMax else {
            throw .invalidArgument("GET_CONFIG size \(size) (must be 1...\(VhostUserLimits.configBytesMax))")
        }
        let access = ConfigAccess(offset: offset, size: size, flags: 0, bytes: [UInt8](repeating: 0, count: Int(size)))
        let reply = try request(.getConfig(access))
        let answer = try reply.configAccess()
        guard reply.payload.count == ConfigAccess.headerBytes + Int(size), answer.size == size,
              answer.offset == offset
        else {
            throw .badConfig("asked for \(size) bytes at offset \(offset), got payload of \(reply.payload.count) bytes "
                + "(size field \(answer.size), offset \(answer.offset))")
        }
        configBytes = answer.bytes
        return BlockConfigSpace(decoding: offset == 0 ? answer.bytes : [])
    }

    /// SET_CONFIG of the `wce` byte (what QEMU sends when the guest toggles the write cache).
    /// The backend must have offered CONFIG_WCE for this to mean anything.
    public func setWriteCache(enabled: Bool) throws(FrontendError) {
        let access = ConfigAccess(offset: UInt32(BlockConfigSpace.writeCacheOffset), size: 1, flags: 0,
                                  bytes: [enabled ? 1 : 0])
        try sendControl(.setConfig(access))
    }

    /// The device's capacity in bytes, from the negotiated config space.
    public var capacityBytes: UInt64 { (config?.capacitySectors ?? 0) &* 512 }
}
