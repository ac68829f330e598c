import LinuxSystem

/// The typed control operations: each sends one request and either returns the parsed reply or
/// throws `ControlError.refused` with the server's status (`NOT_FOUND`, `EXISTS`, ...).
extension ControlClient {
    /// `SERVER_STAT`: capacity, use and load.
    public func serverStat() throws(ControlError) -> ServerStat {
        let reply = try call(.serverStat)
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .serverStat, volume: nil) }
        return try parse(reply.payload, of: .serverStat) { (payload) throws(FrameError) in try ServerStat(payload) }
    }

    /// `SERVER_DRAIN`: starts (or, with `false`, stops) draining the server: backends copy their
    /// page groups to other servers and place nothing new there.
    public func serverDrain(_ draining: Bool) throws(ControlError) {
        let reply = try call(.serverDrain, payload: [draining ? 1 : 0])
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .serverDrain, volume: nil) }
    }

    /// `VOLUME_LIST`: every volume on the server, in the server's order (by name).
    public func volumeList() throws(ControlError) -> [VolumeEntry] {
        let reply = try call(.volumeList)
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeList, volume: nil) }
        return try parse(reply.payload, of: .volumeList) { (payload) throws(FrameError) in try VolumeEntry.list(payload) }
    }

    /// `VOLUME_STAT` of `name`; `refused(.notFound)` if the server has no such volume.
    public func volumeStat(_ name: String) throws(ControlError) -> VolumeStat {
        try Self.checkName(name)
        let reply = try call(.volumeStat, payload: Self.namePayload(name))
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeStat, volume: name) }
        return try parse(reply.payload, of: .volumeStat) { (payload) throws(FrameError) in try VolumeStat(payload) }
    }

    /// `VOLUME_CREATE` of `name` with `sizeBytes`; `refused(.exists)` if the name is in use.
    /// The name and size are checked first (`invalidArgument`), as the server would.
    public func volumeCreate(_ name: String, sizeBytes: UInt64) throws(ControlError) {
        try Self.checkName(name)
        try Self.checkSize(sizeBytes)
        let reply = try call(.volumeCreate, payload: WireMessages.volumeCreate(name: name, sizeBytes: sizeBytes))
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeCreate, volume: name) }
    }

    /// `VOLUME_DELETE` of `name` (its pages are freed, every lease ends); `refused(.notFound)`
    /// if the server has no such volume.
    public func volumeDelete(_ name: String) throws(ControlError) {
        try Self.checkName(name)
        let reply = try call(.volumeDelete, payload: Self.namePayload(name))
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeDelete, volume: name) }
    }

    /// `PING` with `payloadBytes` bytes (at most 4 KiB): returns the round trip, from before the
    /// send to after the echo is in. An echo that differs is a `protocolViolation`.
    public func ping(payloadBytes: Int = 64) throws(ControlError) -> Duration {
        guard (0...WireLimits.smallPayloadBytesMax).contains(payloadBytes) else {
            throw .invalidArgument("a PING payload is 0 to \(WireLimits.smallPayloadBytesMax) bytes, not \(payloadBytes)")
        }
        let payload = (0..<payloadBytes).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let clock = ContinuousClock()
        let start = clock.now
        let reply = try call(.ping, payload: payload)
        let elapsed = clock.now - start
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .ping, volume: nil) }
        guard reply.payload == payload else {
            throw .protocolViolation(server: server.description, reason: "PING echoed other bytes")
        }
        return elapsed
    }

    // MARK: - Argument checks

    /// Throws `invalidArgument` unless `name` is a valid volume name (`WireLimits.isValidName`).
    public static func checkName(_ name: String) throws(ControlError) {
        guard WireLimits.isValidName(name) else {
            throw .invalidArgument("'\(name)' is not a valid volume name: 1 to \(WireLimits.nameBytesMax) of [A-Za-z0-9._-], not starting with '.'")
        }
    }

    /// Throws `invalidArgument` unless `sizeBytes` is a valid volume size: a non-zero multiple
    /// of 4 KiB up to `WireLimits.volumeBytesMax`.
    public static func checkSize(_ sizeBytes: UInt64) throws(ControlError) {
        guard sizeBytes > 0, sizeBytes % UInt64(WireLimits.pageSize) == 0, sizeBytes <= WireLimits.volumeBytesMax else {
            throw .invalidArgument("a volume size is a non-zero multiple of 4 KiB up to \(ByteSize.describe(WireLimits.volumeBytesMax)), not \(sizeBytes) bytes")
        }
    }

    private static func namePayload(_ name: String) -> [UInt8] { WireMessages.name(name) }
}
