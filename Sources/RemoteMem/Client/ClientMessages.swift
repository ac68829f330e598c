/// The control payloads the client sends and the replies it parses (docs/PROTOCOL.md,
/// "Opcodes"). Page data is not here: it travels raw. Every parser checks the whole payload,
/// so a short or padded reply is a protocol violation rather than a crash.
public enum ClientMessages {
    /// Bytes of a HELLO nonce and of a server id.
    public static let nonceBytes = 16

    /// `HELLO` request: magic, version, flags, reserved, client nonce.
    static func hello(nonce: [UInt8]) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(WireLimits.magic)
        writer.u16(WireLimits.version)
        writer.u16(0)
        writer.u32(0)
        writer.raw(nonce)
        return writer.bytes
    }

    /// A parsed `HELLO` reply.
    struct HelloReply {
        var version: UInt16
        var serverID: [UInt8]

        init(_ payload: [UInt8]) throws(FrameError) {
            var reader = PayloadReader(payload)
            guard try reader.u64() == WireLimits.magic else { throw .malformedPayload("bad HELLO magic") }
            version = try reader.u16()
            _ = try reader.u16()
            _ = try reader.u32()
            _ = try reader.raw(nonceBytes)
            serverID = try reader.raw(nonceBytes)
            try reader.finish()
        }
    }

    /// `VOLUME_CREATE`, `VOLUME_DELETE`, `VOLUME_STAT` and `VOLUME_OPEN` payloads.
    static func volumeCreate(name: String, sizeBytes: UInt64) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(sizeBytes)
        writer.name(name)
        return writer.bytes
    }

    static func volumeOpen(name: String, minimumEpoch: UInt64) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(minimumEpoch)
        writer.name(name)
        return writer.bytes
    }

    static func name(_ name: String) -> [UInt8] {
        var writer = PayloadWriter()
        writer.name(name)
        return writer.bytes
    }

    /// `METADATA_PUT` payload: expected version, new version, metadata.
    static func metadataPut(expectedVersion: UInt64, newVersion: UInt64, metadata: [UInt8]) -> [UInt8] {
        var writer = PayloadWriter()
        writer.u64(expectedVersion)
        writer.u64(newVersion)
        writer.blob(metadata)
        return writer.bytes
    }

    /// A parsed `VOLUME_OPEN` reply payload (the handle and epoch are in the header).
    struct VolumeOpenReply {
        var sizeBytes: UInt64
        var metadataVersion: UInt64
        var metadata: [UInt8]

        init(_ payload: [UInt8]) throws(FrameError) {
            var reader = PayloadReader(payload)
            sizeBytes = try reader.u64()
            metadataVersion = try reader.u64()
            metadata = try reader.blob(limit: WireLimits.metadataBytesMax)
            try reader.finish()
        }
    }
}

/// A memory server's capacity and load (`SERVER_STAT`).
public struct ServerStatistics: Equatable, Sendable {
    public var capacityFrames: UInt64
    public var usedFrames: UInt64
    public var volumeCount: UInt32
    public var connectionCount: UInt32
    public var requestsServed: UInt64
    public var bytesIn: UInt64
    public var bytesOut: UInt64

    public var freeFrames: UInt64 { capacityFrames > usedFrames ? capacityFrames - usedFrames : 0 }

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

/// A volume's record on one server (`VOLUME_STAT`).
public struct VolumeStatistics: Equatable, Sendable {
    public var sizeBytes: UInt64
    public var storedPages: UInt64
    public var epoch: UInt64
    public var metadataVersion: UInt64

    init(_ payload: [UInt8]) throws(FrameError) {
        var reader = PayloadReader(payload)
        sizeBytes = try reader.u64()
        storedPages = try reader.u64()
        epoch = try reader.u64()
        metadataVersion = try reader.u64()
        try reader.finish()
    }
}
