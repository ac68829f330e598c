extension ControlClient {
    /// The server's `HELLO` reply: the protocol version it speaks and its 16-byte id.
    public struct ServerHello: Equatable, Sendable {
        public var version: UInt16
        public var serverID: [UInt8]

        /// The server id as 32 lowercase hex digits.
        public var serverIDHex: String { serverID.map { hexByte($0) }.joined() }

        init(_ payload: [UInt8]) throws(FrameError) {
            var reader = PayloadReader(payload)
            guard try reader.u64() == WireLimits.magic else { throw .malformedPayload("HELLO reply with another magic") }
            version = try reader.u16()
            _ = try reader.u16()  // flags
            _ = try reader.u32()  // reserved
            _ = try reader.raw(ControlClient.nonceBytes)  // server nonce (authentication, issue 4)
            serverID = try reader.raw(ControlClient.nonceBytes)
            try reader.finish()
        }
    }

    /// A memory server's capacity and load (`SERVER_STAT`).
    public struct ServerStat: Equatable, Sendable {
        public var capacityFrames: UInt64
        public var usedFrames: UInt64
        public var volumeCount: UInt32
        /// Open connections, this one included.
        public var connectionCount: UInt32
        public var requestsServed: UInt64
        public var bytesIn: UInt64
        public var bytesOut: UInt64

        public var freeFrames: UInt64 { capacityFrames > usedFrames ? capacityFrames - usedFrames : 0 }
        public var capacityBytes: UInt64 { capacityFrames * UInt64(WireLimits.pageSize) }
        public var usedBytes: UInt64 { usedFrames * UInt64(WireLimits.pageSize) }
        public var freeBytes: UInt64 { freeFrames * UInt64(WireLimits.pageSize) }
        /// Used frames as a percentage of capacity (0 for a server of no capacity).
        public var usePercent: Double { capacityFrames == 0 ? 0 : Double(usedFrames) * 100 / Double(capacityFrames) }

        init(_ payload: [UInt8]) throws(FrameError) {
            var reader = PayloadReader(payload)
            capacityFrames = try reader.u64()
            usedFrames = try reader.u64()
            volumeCount = try reader.u32()
            connectionCount = try reader.u32()
            requestsServed = try reader.u64()
            bytesIn = try reader.u64()
            bytesOut = try reader.u64()
            try reader.finish()
        }
    }

    /// One volume's record on one server (`VOLUME_STAT`).
    public struct VolumeStat: Equatable, Sendable {
        public var sizeBytes: UInt64
        public var storedPages: UInt64
        /// The lease epoch: 0 until the first `VOLUME_OPEN`.
        public var epoch: UInt64
        /// The version of the metadata (group table) stored with the volume.
        public var metadataVersion: UInt64

        public var storedBytes: UInt64 { storedPages * UInt64(WireLimits.pageSize) }

        init(_ payload: [UInt8]) throws(FrameError) {
            var reader = PayloadReader(payload)
            sizeBytes = try reader.u64()
            storedPages = try reader.u64()
            epoch = try reader.u64()
            metadataVersion = try reader.u64()
            try reader.finish()
        }
    }

    /// One volume of a `VOLUME_LIST` reply.
    public struct VolumeEntry: Equatable, Sendable {
        public var name: String
        public var sizeBytes: UInt64
        public var storedPages: UInt64

        public var storedBytes: UInt64 { storedPages * UInt64(WireLimits.pageSize) }

        /// Parses a whole `VOLUME_LIST` reply payload.
        static func list(_ payload: [UInt8]) throws(FrameError) -> [VolumeEntry] {
            var reader = PayloadReader(payload)
            let count = Int(try reader.u32())
            guard count <= WireLimits.volumesMax else { throw .malformedPayload("\(count) volumes listed") }
            var entries: [VolumeEntry] = []
            entries.reserveCapacity(count)
            for _ in 0..<count {
                let size = try reader.u64()
                let stored = try reader.u64()
                entries.append(VolumeEntry(name: try reader.name(), sizeBytes: size, storedPages: stored))
            }
            try reader.finish()
            return entries
        }
    }
}

/// Two lowercase hex digits.
private func hexByte(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
}
