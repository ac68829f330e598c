import GuestMemory

/// Decodes front-end messages from header + payload bytes, and encodes them (for the Swift
/// frontend) and the backend's replies. Every size is checked against its request type before a
/// field is read; a mismatch is `badPayloadSize`, which closes the connection.
public enum MessageCodec {
    /// Checks a received header: version 1, not a reply, payload within limits.
    public static func validate(_ header: MessageHeader) throws(VhostUserError) {
        guard header.flags & 0x3 == MessageHeader.version else {
            throw .badHeader("version bits \(header.flags & 0x3), expected 1")
        }
        guard header.flags & MessageHeader.replyFlag == 0 else {
            throw .badHeader("reply flag set on a front-end request")
        }
        guard Int(header.size) <= VhostUserLimits.payloadBytesMax else {
            throw .badHeader("payload of \(header.size) bytes exceeds \(VhostUserLimits.payloadBytesMax)")
        }
    }

    /// Decodes the payload of a message whose header passed `validate`.
    public static func decode(_ header: MessageHeader, payload: UnsafeRawBufferPointer) throws(VhostUserError) -> FrontendMessage {
        guard let request = FrontendRequest(rawValue: header.request) else { throw .unknownRequest(header.request) }
        var reader = ByteReader(payload)
        func exactly(_ n: Int) throws(VhostUserError) {
            guard payload.count == n else {
                throw .badPayloadSize(request: request.description, size: payload.count, expected: "\(n)")
            }
        }
        func atLeast(_ n: Int) throws(VhostUserError) {
            guard payload.count >= n else {
                throw .badPayloadSize(request: request.description, size: payload.count, expected: "≥ \(n)")
            }
        }
        func vringState() throws(VhostUserError) -> VringState {
            try exactly(VringState.sizeBytes)
            return VringState(index: reader.u32(), num: reader.u32())
        }
        func u64() throws(VhostUserError) -> UInt64 {
            try exactly(8)
            return reader.u64()
        }
        func region() -> MemoryRegionLayout {
            MemoryRegionLayout(guestAddress: GuestAddress(reader.u64()), size: reader.u64(),
                               frontendAddress: FrontendAddress(reader.u64()), mmapOffset: reader.u64())
        }
        switch request {
        case .getFeatures: try exactly(0); return .getFeatures
        case .setFeatures: return .setFeatures(try u64())
        case .setOwner: try exactly(0); return .setOwner
        case .resetOwner: try exactly(0); return .resetOwner
        case .setMemTable:
            try atLeast(8)
            let count = Int(reader.u32())
            _ = reader.u32()
            guard count <= VhostUserLimits.memTableRegionsMax else {
                throw .invalidRequest("SET_MEM_TABLE with \(count) regions (at most \(VhostUserLimits.memTableRegionsMax))")
            }
            try exactly(8 + 32 * count)
            var regions: [MemoryRegionLayout] = []
            for _ in 0..<count { regions.append(region()) }
            return .setMemTable(regions)
        case .setLogBase:
            try exactly(LogArea.sizeBytes)
            return .setLogBase(LogArea(mmapSize: reader.u64(), mmapOffset: reader.u64()))
        case .setLogFD: try exactly(0); return .setLogFD
        case .setVringNum: return .setVringNum(try vringState())
        case .setVringBase: return .setVringBase(try vringState())
        case .getVringBase: return .getVringBase(try vringState())
        case .setVringEnable: return .setVringEnable(try vringState())
        case .setVringAddr:
            try exactly(VringAddress.sizeBytes)
            return .setVringAddr(VringAddress(index: reader.u32(), flags: reader.u32(),
                                              descriptorTable: FrontendAddress(reader.u64()),
                                              usedRing: FrontendAddress(reader.u64()),
                                              availRing: FrontendAddress(reader.u64()),
                                              logGuestAddress: GuestAddress(reader.u64())))
        case .setVringKick: return .setVringKick(VringDescriptorPayload(try u64()))
        case .setVringCall: return .setVringCall(VringDescriptorPayload(try u64()))
        case .setVringErr: return .setVringErr(VringDescriptorPayload(try u64()))
        case .getProtocolFeatures: try exactly(0); return .getProtocolFeatures
        case .setProtocolFeatures: return .setProtocolFeatures(try u64())
        case .getQueueNum: try exactly(0); return .getQueueNum
        case .setBackendReqFD: try exactly(0); return .setBackendReqFD
        case .getConfig, .setConfig:
            try atLeast(ConfigAccess.headerBytes)
            let offset = reader.u32()
            let size = reader.u32()
            let flags = reader.u32()
            guard Int(size) <= VhostUserLimits.configBytesMax else {
                throw .badPayloadSize(request: request.description, size: Int(size), expected: "config ≤ 256 bytes")
            }
            try exactly(ConfigAccess.headerBytes + Int(size))
            let access = ConfigAccess(offset: offset, size: size, flags: flags, bytes: reader.bytes(Int(size)))
            return request == .getConfig ? .getConfig(access) : .setConfig(access)
        case .getInflightFD, .setInflightFD:
            try exactly(InflightArea.sizeBytes)
            let area = InflightArea(mmapSize: reader.u64(), mmapOffset: reader.u64(),
                                    queueCount: reader.u16(), queueSize: reader.u16())
            return request == .getInflightFD ? .getInflightFD(area) : .setInflightFD(area)
        case .resetDevice: try exactly(0); return .resetDevice
        case .getMaxMemSlots: try exactly(0); return .getMaxMemSlots
        case .addMemReg, .remMemReg:
            try exactly(40)
            _ = reader.u64()  // padding
            let layout = region()
            return request == .addMemReg ? .addMemReg(layout) : .remMemReg(layout)
        case .setStatus: return .setStatus(try u64())
        case .getStatus: try exactly(0); return .getStatus
        default: return .unsupported(request)
        }
    }

    /// Encodes a front-end message (header and payload) as the Swift frontend sends it.
    public static func encode(_ message: FrontendMessage, needReply: Bool = false) -> [UInt8] {
        var payload = ByteWriter()
        switch message {
        case .getFeatures, .setOwner, .resetOwner, .setLogFD, .getProtocolFeatures, .getQueueNum,
             .setBackendReqFD, .resetDevice, .getMaxMemSlots, .getStatus, .unsupported:
            break
        case .setFeatures(let v), .setProtocolFeatures(let v), .setStatus(let v):
            payload.u64(v)
        case .setMemTable(let regions):
            payload.u32(UInt32(regions.count))
            payload.u32(0)
            for r in regions { payload.region(r) }
        case .setLogBase(let area):
            payload.u64(area.mmapSize)
            payload.u64(area.mmapOffset)
        case .setVringNum(let s), .setVringBase(let s), .getVringBase(let s), .setVringEnable(let s):
            payload.u32(s.index)
            payload.u32(s.num)
        case .setVringAddr(let a):
            payload.u32(a.index)
            payload.u32(a.flags)
            payload.u64(a.descriptorTable.rawValue)
            payload.u64(a.usedRing.rawValue)
            payload.u64(a.availRing.rawValue)
            payload.u64(a.logGuestAddress.rawValue)
        case .setVringKick(let d), .setVringCall(let d), .setVringErr(let d):
            payload.u64(d.rawValue)
        case .getConfig(let c), .setConfig(let c):
            payload.config(c)
        case .getInflightFD(let i), .setInflightFD(let i):
            payload.inflight(i)
        case .addMemReg(let r), .remMemReg(let r):
            payload.u64(0)
            payload.region(r)
        }
        let flags = MessageHeader.version | (needReply ? MessageHeader.needReplyFlag : 0)
        return frame(MessageHeader(request: message.request.rawValue, flags: flags, size: UInt32(payload.bytes.count)),
                     payload.bytes)
    }

    /// A reply carrying a u64 (features, queue count, REPLY_ACK status, ...).
    public static func replyU64(_ request: FrontendRequest, _ value: UInt64) -> [UInt8] {
        var payload = ByteWriter()
        payload.u64(value)
        return frame(.reply(to: request.rawValue, size: 8), payload.bytes)
    }

    /// The GET_VRING_BASE reply.
    public static func replyVringState(_ request: FrontendRequest, _ state: VringState) -> [UInt8] {
        var payload = ByteWriter()
        payload.u32(state.index)
        payload.u32(state.num)
        return frame(.reply(to: request.rawValue, size: 8), payload.bytes)
    }

    /// The GET_CONFIG reply; an empty payload signals failure (spec).
    public static func replyConfig(_ access: ConfigAccess?) -> [UInt8] {
        guard let access else { return frame(.reply(to: FrontendRequest.getConfig.rawValue, size: 0), []) }
        var payload = ByteWriter()
        payload.config(access)
        return frame(.reply(to: FrontendRequest.getConfig.rawValue, size: payload.bytes.count), payload.bytes)
    }

    /// The GET_INFLIGHT_FD reply (the fd travels with it).
    public static func replyInflight(_ area: InflightArea) -> [UInt8] {
        var payload = ByteWriter()
        payload.inflight(area)
        return frame(.reply(to: FrontendRequest.getInflightFD.rawValue, size: payload.bytes.count), payload.bytes)
    }

    static func frame(_ header: MessageHeader, _ payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(MessageHeader.sizeBytes + payload.count)
        header.encode(into: &bytes)
        bytes.append(contentsOf: payload)
        return bytes
    }

    /// Decodes a reply payload the frontend received (u64 replies).
    public static func decodeU64(_ payload: [UInt8]) -> UInt64? {
        guard payload.count == 8 else { return nil }
        return payload.withUnsafeBytes { ByteReader($0).u64Value() }
    }
}

/// Little-endian field reader over a payload whose size was already checked.
struct ByteReader {
    let raw: UnsafeRawBufferPointer
    var offset = 0
    init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

    mutating func u16() -> UInt16 { defer { offset += 2 }; return UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
    mutating func u32() -> UInt32 { defer { offset += 4 }; return UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
    mutating func u64() -> UInt64 { defer { offset += 8 }; return UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    func u64Value() -> UInt64 { UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
    mutating func bytes(_ n: Int) -> [UInt8] { defer { offset += n }; return Array(raw[offset..<(offset + n)]) }
}

/// Little-endian payload writer.
struct ByteWriter {
    var bytes: [UInt8] = []
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func region(_ r: MemoryRegionLayout) {
        u64(r.guestAddress.rawValue)
        u64(r.size)
        u64(r.frontendAddress.rawValue)
        u64(r.mmapOffset)
    }
    mutating func config(_ c: ConfigAccess) {
        u32(c.offset)
        u32(c.size)
        u32(c.flags)
        bytes.append(contentsOf: c.bytes)
    }
    mutating func inflight(_ i: InflightArea) {
        u64(i.mmapSize)
        u64(i.mmapOffset)
        u16(i.queueCount)
        u16(i.queueSize)
        u32(0)
    }
}
