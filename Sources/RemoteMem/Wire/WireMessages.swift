/// The control payloads of the wire protocol (docs/PROTOCOL.md, "Opcodes"): what clients send
/// and the replies they parse. One codec for the data-path client (`ServerConnection`,
/// `RemoteVolume`) and the control client (`ControlClient`, memxctl). Page data is not here: it
/// travels raw. Every parser checks the whole payload, so a short or padded reply is a
/// `FrameError` rather than a crash.
public enum WireMessages {
    /// Bytes of a HELLO nonce and of a server id.
    public static let nonceBytes = 16
    /// HELLO reply flag `AUTH_REQUIRED`: this server has a cluster key, and answers every request but HELLO and
    /// AUTH with `UNAUTHENTICATED` until the client proves it (docs/PROTOCOL.md, "Authentication").
    public static let helloFlagAuthenticationRequired: UInt16 = 1 << 0

    /// `HELLO` request: magic, version, flags, reserved, client nonce.
    public static func hello(nonce: [UInt8]) -> [UInt8] {
        precondition(nonce.count == nonceBytes)
        var writer = PayloadWriter()
        writer.u64(WireLimits.magic)
        writer.u16(WireLimits.version)
        writer.u16(0)
        writer.u32(0)
        writer.raw(nonce)
        return writer.bytes
    }

    /// `AUTH` request (and reply) payload: one 32-byte proof (`ClusterKey.clientProof`,
    /// `ClusterKey.serverProof`).
    public static func auth(proof: [UInt8]) -> [UInt8] {
        precondition(proof.count == ClusterKey.proofBytes)
        return proof
    }

    /// Parses an `AUTH` request or reply payload: exactly one 32-byte proof.
    public static func authProof(_ payload: [UInt8]) throws(FrameError) -> [UInt8] {
        var reader = PayloadReader(payload)
        let proof = try reader.raw(ClusterKey.proofBytes)
        try reader.finish()
        return proof
    }

    /// A fresh random nonce.
    public static func randomNonce() -> [UInt8] {
        var random = SystemRandomNumberGenerator()
        return (0..<nonceBytes).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    /// `VOLUME_CREATE` payload: size, name.
    public static func volumeCreate(name: String, sizeBytes: UInt64) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(sizeBytes)
        writer.name(name)
        return writer.bytes
    }

    /// `VOLUME_OPEN` payload: minimum epoch, name.
    public static func volumeOpen(name: String, minimumEpoch: UInt64) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(minimumEpoch)
        writer.name(name)
        return writer.bytes
    }

    /// `VOLUME_DELETE` / `VOLUME_STAT` payload: a name.
    public static func name(_ name: String) -> [UInt8] {
        var writer = PayloadWriter()
        writer.name(name)
        return writer.bytes
    }

    /// `METADATA_PUT` payload: expected version, new version, metadata.
    public static func metadataPut(expectedVersion: UInt64, newVersion: UInt64, metadata: [UInt8]) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(expectedVersion)
        writer.u64(newVersion)
        writer.blob(metadata)
        return writer.bytes
    }
}

/// The server's `HELLO` reply: the protocol version it speaks, whether it wants `AUTH`, its
/// nonce for this connection and its 16-byte id.
public struct HelloReply: Equatable, Sendable {
    public var version: UInt16
    public var flags: UInt16
    /// Fresh random bytes for this connection: what makes an `AUTH` proof good for it only.
    public var serverNonce: [UInt8]
    public var serverID: [UInt8]

    /// True if the server has a cluster key and wants `AUTH` before anything else.
    public var requiresAuthentication: Bool { flags & WireMessages.helloFlagAuthenticationRequired != 0 }

    /// The server id as 32 lowercase hex digits.
    public var serverIDHex: String {
        let digits = Array("0123456789abcdef")
        return String(serverID.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0xf)]] })
    }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        guard try reader.u64() == WireLimits.magic else { throw .malformedPayload("HELLO reply with another magic") }
        version = try reader.u16()
        flags = try reader.u16()
        _ = try reader.u32()  // reserved
        serverNonce = try reader.raw(WireMessages.nonceBytes)
        serverID = try reader.raw(WireMessages.nonceBytes)
        try reader.finish()
    }
}

/// A memory server's capacity and load (`SERVER_STAT`).
public struct ServerStatistics: Equatable, Sendable {
    public var capacityFrames: UInt64
    public var usedFrames: UInt64
    public var volumeCount: UInt32
    /// Open connections, the asking one included.
    public var connectionCount: UInt32
    public var requestsServed: UInt64
    public var bytesIn: UInt64
    public var bytesOut: UInt64
    /// Bit 0: the server is draining (`SERVER_DRAIN`): backends move their groups off it and
    /// place nothing new there.
    public var flags: UInt32

    public static let flagDraining: UInt32 = 1

    public var isDraining: Bool { flags & Self.flagDraining != 0 }

    public var freeFrames: UInt64 { capacityFrames > usedFrames ? capacityFrames - usedFrames : 0 }
    public var capacityBytes: UInt64 { capacityFrames * UInt64(WireLimits.pageSize) }
    public var usedBytes: UInt64 { usedFrames * UInt64(WireLimits.pageSize) }
    public var freeBytes: UInt64 { freeFrames * UInt64(WireLimits.pageSize) }
    /// Used frames as a percentage of capacity (0 for a server of no capacity).
    public var usePercent: Double { capacityFrames == 0 ? 0 : Double(usedFrames) * 100 / Double(capacityFrames) }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        capacityFrames = try reader.u64()
        usedFrames = try reader.u64()
        volumeCount = try reader.u32()
        connectionCount = try reader.u32()
        requestsServed = try reader.u64()
        bytesIn = try reader.u64()
        bytesOut = try reader.u64()
        flags = try reader.u32()
        _ = try reader.u32()  // reserved
        try reader.finish()
    }
}

/// A volume's record on one server (`VOLUME_STAT`).
public struct VolumeStatistics: Equatable, Sendable {
    public var sizeBytes: UInt64
    public var storedPages: UInt64
    /// The lease epoch: 0 until the first `VOLUME_OPEN`.
    public var epoch: UInt64
    /// The version of the metadata (group table) stored with the volume.
    public var metadataVersion: UInt64

    public var storedBytes: UInt64 { storedPages * UInt64(WireLimits.pageSize) }

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        sizeBytes = try reader.u64()
        storedPages = try reader.u64()
        epoch = try reader.u64()
        metadataVersion = try reader.u64()
        try reader.finish()
    }
}

/// A `VOLUME_OPEN` reply payload (the handle and epoch travel in the header).
public struct VolumeOpenReply: Equatable, Sendable {
    public var sizeBytes: UInt64
    public var metadataVersion: UInt64
    public var metadata: [UInt8]

    public init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        sizeBytes = try reader.u64()
        metadataVersion = try reader.u64()
        metadata = try reader.blob(limit: WireLimits.metadataBytesMax)
        try reader.finish()
    }
}

/// One volume of a `VOLUME_LIST` reply.
public struct VolumeListEntry: Equatable, Sendable {
    public var name: String
    public var sizeBytes: UInt64
    public var storedPages: UInt64

    public var storedBytes: UInt64 { storedPages * UInt64(WireLimits.pageSize) }

    public init(name: String, sizeBytes: UInt64, storedPages: UInt64) {
        self.name = name
        self.sizeBytes = sizeBytes
        self.storedPages = storedPages
    }

    /// Parses a whole `VOLUME_LIST` reply payload.
    public static func list(_ payload: [UInt8]) throws(FrameError) -> [VolumeListEntry] {
        var reader = PayloadReader(payload)
        let count = Int(try reader.u32())
        guard count <= WireLimits.volumesMax else { throw .malformedPayload("\(count) volumes listed") }
        var entries: [VolumeListEntry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            let size = try reader.u64()
            let stored = try reader.u64()
            entries.append(VolumeListEntry(name: try reader.name(), sizeBytes: size, storedPages: stored))
        }
        try reader.finish()
        return entries
    }
}
