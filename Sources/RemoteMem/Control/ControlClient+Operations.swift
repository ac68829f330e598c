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

    /// `VOLUME_CREATE` with a de-duplication policy: like `volumeCreate(_:sizeBytes:)`, but with
    /// `deduplicate` false the volume shares no frame with any other page (`NO_DEDUP`). Throws
    /// `unsupported` for a server that does not de-duplicate (it would close the connection).
    public func volumeCreate(_ name: String, sizeBytes: UInt64, deduplicate: Bool) throws(ControlError) {
        guard !deduplicate else { return try volumeCreate(name, sizeBytes: sizeBytes) }
        try Self.checkName(name)
        try Self.checkSize(sizeBytes)
        try requireDedup("a volume without de-duplication")
        let reply = try call(.volumeCreate, payload: DedupMessages.volumeCreate(name: name, sizeBytes: sizeBytes,
                                                                                 flags: DedupMessages.volumeFlagNoDedup))
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeCreate, volume: name) }
    }

    /// `VOLUME_CLONE`: a new volume `name` with `template`'s size, group table and pages, sharing
    /// every page until written (copying them if either volume does not de-duplicate).
    /// `refused(.notFound)` without the template, `.exists` if the name is taken, `.full` if a
    /// copy does not fit.
    public func volumeClone(template: String, name: String, deduplicate: Bool = true) throws(ControlError) -> CloneResult {
        try Self.checkName(template)
        try Self.checkName(name)
        guard template != name else { throw .invalidArgument("a volume cannot be cloned onto itself ('\(name)')") }
        try requireDedup("clones")
        let reply = try call(.volumeClone, payload: DedupMessages.volumeClone(
            template: template, name: name, flags: deduplicate ? 0 : DedupMessages.volumeFlagNoDedup))
        guard reply.header.statusValue == .ok else {
            // NOT_FOUND is about the template; EXISTS and FULL about the new volume.
            let subject = reply.header.statusValue == .notFound ? template : name
            throw refusal(reply.header, .volumeClone, volume: subject)
        }
        return try parse(reply.payload, of: .volumeClone) { (payload) throws(FrameError) in try CloneResult(payload) }
    }

    /// `DEDUP_STAT`: the server's logical pages, stored frames, sharing and totals.
    public func dedupStat() throws(ControlError) -> DedupStatistics {
        try requireDedup("de-duplication numbers")
        let reply = try call(.dedupStat)
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .dedupStat, volume: nil) }
        return try parse(reply.payload, of: .dedupStat) { (payload) throws(FrameError) in try DedupStatistics(payload) }
    }

    /// `VOLUME_DEDUP_STAT` of `name`: its policy, shared pages and fair share of memory.
    public func volumeDedupStat(_ name: String) throws(ControlError) -> VolumeDedupStatistics {
        try Self.checkName(name)
        try requireDedup("de-duplication numbers")
        let reply = try call(.volumeDedupStat, payload: Self.namePayload(name))
        guard reply.header.statusValue == .ok else { throw refusal(reply.header, .volumeDedupStat, volume: name) }
        return try parse(reply.payload, of: .volumeDedupStat) { (payload) throws(FrameError) in try VolumeDedupStatistics(payload) }
    }

    /// True if the server's HELLO said it de-duplicates (and knows the opcodes that go with it).
    public var deduplicates: Bool { (hello?.flags ?? 0) & DedupMessages.helloFlagDedup != 0 }

    /// Throws `unsupported` unless the server de-duplicates.
    private func requireDedup(_ what: String) throws(ControlError) {
        guard deduplicates else { throw .unsupported(server: server.description, what: what) }
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
