import GuestMemory
import MemxTesting
import Testing
import VhostUser

/// The vhost-user wire format (vhost-user.md §1.1): every message round-trips, every size is
/// exact, bad headers close the connection, replies look exactly as QEMU 7.2 demands.
@Suite("MessageCodec")
struct CodecTests {
    // MARK: - Samples

    static let regionA = MemoryRegionLayout(guestAddress: GuestAddress(0), size: 0xa0000,
                                            frontendAddress: FrontendAddress(0x7f00_0000_0000), mmapOffset: 0)
    static let regionB = MemoryRegionLayout(guestAddress: GuestAddress(0xc0000), size: 0xff40000,
                                            frontendAddress: FrontendAddress(0x7f00_000c_0000), mmapOffset: 0xc0000)

    static let fullTable: [MemoryRegionLayout] = (0..<8).map { (i: Int) -> MemoryRegionLayout in
        let n = UInt64(i)
        return MemoryRegionLayout(guestAddress: GuestAddress(n << 32), size: 0x1000 * (n + 1),
                                  frontendAddress: FrontendAddress(0x7f00_0000_0000 + n << 36), mmapOffset: n * 0x200000)
    }
    static let vringAddress = VringAddress(index: 1, flags: VringAddress.flagLog,
                                           descriptorTable: FrontendAddress(0x7f00_1111_0000),
                                           usedRing: FrontendAddress(0x7f00_2222_0000),
                                           availRing: FrontendAddress(0x7f00_3333_0000),
                                           logGuestAddress: GuestAddress(0x4444_0000))
    static let config57 = ConfigAccess(offset: 0, size: 57, flags: 0, bytes: [UInt8](repeating: 0, count: 57))
    static let config256 = ConfigAccess(offset: 0, size: 256, flags: 0, bytes: (0..<256).map { (i: Int) -> UInt8 in UInt8(i) })

    /// One sample of every `FrontendMessage` case (with distinct field values so a swapped
    /// field shows up), plus variants at the edges of variable sizes.
    static let samples: [FrontendMessage] = [
        .getFeatures,
        .setFeatures(0x1_7000_7e46),
        .setOwner,
        .resetOwner,
        .setMemTable([regionA, regionB]),
        .setMemTable([]),
        .setMemTable(fullTable),
        .setLogBase(LogArea(mmapSize: 0x2000, mmapOffset: 0x1000)),
        .setLogFD,
        .setVringNum(VringState(index: 1, num: 128)),
        .setVringAddr(vringAddress),
        .setVringBase(VringState(index: 0, num: 5015)),
        .getVringBase(VringState(index: 1, num: 0)),
        .setVringKick(VringDescriptorPayload(index: 1, hasFileDescriptor: true)),
        .setVringCall(VringDescriptorPayload(index: 0, hasFileDescriptor: false)),
        .setVringErr(VringDescriptorPayload(index: 2, hasFileDescriptor: true)),
        .getProtocolFeatures,
        .setProtocolFeatures(0x8f2b),
        .getQueueNum,
        .setVringEnable(VringState(index: 1, num: 1)),
        .setBackendReqFD,
        .getConfig(config57),
        .getConfig(config256),
        .getConfig(ConfigAccess(offset: 0, size: 0, flags: 0, bytes: [])),
        .setConfig(ConfigAccess(offset: 32, size: 1, flags: 0, bytes: [1])),
        .getInflightFD(InflightArea(mmapSize: 0, mmapOffset: 0, queueCount: 2, queueSize: 128)),
        .setInflightFD(InflightArea(mmapSize: 0x4000, mmapOffset: 0x10, queueCount: 2, queueSize: 256)),
        .resetDevice,
        .getMaxMemSlots,
        .addMemReg(regionB),
        .remMemReg(regionA),
        .setStatus(0xf),
        .getStatus,
        .unsupported(.sendRARP),
        .unsupported(.postcopyAdvise),
        .unsupported(.vringKick),
    ]

    /// Forces this file to be revisited when a case is added: the switch has no default.
    static func caseIndex(_ message: FrontendMessage) -> Int {
        switch message {
        case .getFeatures: 0
        case .setFeatures: 1
        case .setOwner: 2
        case .resetOwner: 3
        case .setMemTable: 4
        case .setLogBase: 5
        case .setLogFD: 6
        case .setVringNum: 7
        case .setVringAddr: 8
        case .setVringBase: 9
        case .getVringBase: 10
        case .setVringKick: 11
        case .setVringCall: 12
        case .setVringErr: 13
        case .getProtocolFeatures: 14
        case .setProtocolFeatures: 15
        case .getQueueNum: 16
        case .setVringEnable: 17
        case .setBackendReqFD: 18
        case .getConfig: 19
        case .setConfig: 20
        case .getInflightFD: 21
        case .setInflightFD: 22
        case .resetDevice: 23
        case .getMaxMemSlots: 24
        case .addMemReg: 25
        case .remMemReg: 26
        case .setStatus: 27
        case .getStatus: 28
        case .unsupported: 29
        }
    }

    static let caseCount = 30

    /// The exact payload size QEMU sends for a request, from vhost-user.md §1.1 (not from the
    /// codec), or nil where it depends on the content.
    static func specPayloadSize(_ request: FrontendRequest) -> Int? {
        switch request {
        case .getFeatures, .setOwner, .resetOwner, .setLogFD, .getProtocolFeatures, .getQueueNum,
             .setBackendReqFD, .resetDevice, .getMaxMemSlots, .getStatus:
            0
        case .setFeatures, .setProtocolFeatures, .setStatus, .setVringKick, .setVringCall, .setVringErr:
            8
        case .setVringNum, .setVringBase, .getVringBase, .setVringEnable: 8
        case .setVringAddr: 40
        case .setLogBase: 16
        case .getInflightFD, .setInflightFD: 24
        case .addMemReg, .remMemReg: 40
        default: nil
        }
    }

    // MARK: - Helpers

    static func decode(_ bytes: [UInt8]) throws(VhostUserError) -> FrontendMessage {
        precondition(bytes.count >= MessageHeader.sizeBytes)
        let header = bytes.withUnsafeBytes { MessageHeader.decode($0) }
        try MessageCodec.validate(header)
        let payload = Array(bytes[MessageHeader.sizeBytes...])
        let result = payload.withUnsafeBytes { raw in
            Result { () throws(VhostUserError) in try MessageCodec.decode(header, payload: raw) }
        }
        return try result.get()
    }

    static func frame(request: UInt32, flags: UInt32 = MessageHeader.version, payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        MessageHeader(request: request, flags: flags, size: UInt32(payload.count)).encode(into: &bytes)
        return bytes + payload
    }

    static func decodeError(_ bytes: [UInt8]) -> VhostUserError? {
        do {
            _ = try decode(bytes)
            return nil
        } catch {
            return error
        }
    }

    static func isBadPayloadSize(_ error: VhostUserError?) -> Bool {
        if case .badPayloadSize = error { return true }
        return false
    }

    static func isBadHeader(_ error: VhostUserError?) -> Bool {
        if case .badHeader = error { return true }
        return false
    }

    // MARK: - Round trips

    @Test("the samples cover every FrontendMessage case")
    func samplesCoverEveryCase() {
        let covered = Set(Self.samples.map(Self.caseIndex))
        #expect(covered == Set(0..<Self.caseCount))
    }

    @Test("every message round-trips through encode → header decode → decode", arguments: samples)
    func roundTrip(_ message: FrontendMessage) throws {
        let bytes = MessageCodec.encode(message)
        let header = bytes.withUnsafeBytes { MessageHeader.decode($0) }
        #expect(header.request == message.request.rawValue)
        #expect(header.flags == MessageHeader.version)
        #expect(!header.needsReply)
        #expect(!header.isReply)
        #expect(Int(header.size) == bytes.count - MessageHeader.sizeBytes)
        if let size = Self.specPayloadSize(message.request) {
            #expect(Int(header.size) == size, "payload size of \(message.request)")
        }
        #expect(try Self.decode(bytes) == message)
    }

    @Test("payload sizes of variable messages follow the spec layouts")
    func variablePayloadSizes() {
        let table = MessageCodec.encode(.setMemTable([Self.regionA, Self.regionB]))
        #expect(table.count == 12 + 8 + 2 * 32)
        let config = MessageCodec.encode(.getConfig(ConfigAccess(offset: 0, size: 57, flags: 0,
                                                                 bytes: [UInt8](repeating: 0, count: 57))))
        #expect(config.count == 12 + 12 + 57)
        let inflight = MessageCodec.encode(.getInflightFD(InflightArea(mmapSize: 1, mmapOffset: 2,
                                                                       queueCount: 3, queueSize: 4)))
        #expect(Array(inflight[(12 + 20)...]) == [0, 0, 0, 0], "4 padding bytes after queue_size")
    }

    @Test("fields are little-endian at their spec offsets")
    func fieldOffsets() throws {
        let address = VringAddress(index: 0x0102_0304, flags: 1, descriptorTable: FrontendAddress(0x1111),
                                   usedRing: FrontendAddress(0x2222), availRing: FrontendAddress(0x3333),
                                   logGuestAddress: GuestAddress(0x4444))
        let bytes = MessageCodec.encode(.setVringAddr(address))
        #expect(Array(bytes[0..<12]) == [9, 0, 0, 0, 1, 0, 0, 0, 40, 0, 0, 0])
        #expect(Array(bytes[12..<16]) == [4, 3, 2, 1])
        // desc, used, avail, log: struct vhost_vring_addr order (used before avail).
        #expect(bytes[20] == 0x11 && bytes[28] == 0x22 && bytes[36] == 0x33 && bytes[44] == 0x44)
        let add = MessageCodec.encode(.addMemReg(Self.regionB))
        #expect(Array(add[12..<20]) == [UInt8](repeating: 0, count: 8), "ADD_MEM_REG padding")
        #expect(Array(add[20..<28]) == [0, 0, 0x0c, 0, 0, 0, 0, 0], "gpa first")
    }

    @Test("every known request code decodes to a message naming that request")
    func everyRequestCode() throws {
        for code in UInt32(1)...40 {
            let request = try #require(FrontendRequest(rawValue: code))
            let size = Self.specPayloadSize(request) ?? {
                switch request {
                case .setMemTable: 8
                case .getConfig, .setConfig: 12
                default: 0
                }
            }()
            let message = try Self.decode(Self.frame(request: code, payload: [UInt8](repeating: 0, count: size)))
            #expect(message.request == request, "code \(code)")
        }
    }

    @Test("NEED_REPLY is carried in the header")
    func needReply() {
        let bytes = MessageCodec.encode(.setFeatures(1), needReply: true)
        let header = bytes.withUnsafeBytes { MessageHeader.decode($0) }
        #expect(header.flags == 0x9)
        #expect(header.needsReply)
        #expect(!header.isReply)
    }

    // MARK: - Payload sizes

    @Test("a fixed-size payload of any other size is badPayloadSize and disconnects",
          arguments: samples.filter { specPayloadSize($0.request).map { $0 > 0 } ?? false })
    func wrongFixedSize(_ message: FrontendMessage) {
        let good = MessageCodec.encode(message)
        let payload = Array(good[12...])
        for size in [0, payload.count - 1, payload.count + 1, payload.count + 8] {
            let resized = Array((payload + [UInt8](repeating: 0xee, count: 16)).prefix(size))
            let error = Self.decodeError(Self.frame(request: message.request.rawValue, payload: resized))
            #expect(Self.isBadPayloadSize(error), "\(message.request) with \(size) bytes: \(String(describing: error))")
            #expect(error?.requiresDisconnect == true)
        }
    }

    // QEMU sends these with size 0 (rust-vmm `check_request_size(&hdr, size, 0)`); anything
    // else is a confused or hostile frontend.
    @Test("a message without payload that carries one is badPayloadSize",
          arguments: samples.filter { specPayloadSize($0.request) == 0 })
    func payloadOnEmptyMessage(_ message: FrontendMessage) {
        for size in [1, 8] {
            let error = Self.decodeError(Self.frame(request: message.request.rawValue,
                                                    payload: [UInt8](repeating: 0, count: size)))
            #expect(Self.isBadPayloadSize(error), "\(message.request) with \(size) bytes: \(String(describing: error))")
            #expect(error?.requiresDisconnect == true)
        }
    }

    @Test("SET_MEM_TABLE: size must be exactly 8 + 32·n")
    func memTableSizes() {
        let good = MessageCodec.encode(.setMemTable([Self.regionA, Self.regionB]))
        let payload = Array(good[12...])
        for size in [0, 4, 7, 8 + 32, 8 + 63] {
            let error = Self.decodeError(Self.frame(request: 5, payload: Array(payload.prefix(size))))
            #expect(Self.isBadPayloadSize(error), "\(size) bytes")
            #expect(error?.requiresDisconnect == true)
        }
        let trailing = Self.decodeError(Self.frame(request: 5, payload: payload + [UInt8](repeating: 0, count: 32)))
        #expect(Self.isBadPayloadSize(trailing), "2 regions with 32 trailing bytes: \(String(describing: trailing))")
    }

    @Test("SET_MEM_TABLE with 9 regions is invalidRequest, which keeps the connection")
    func memTableTooManyRegions() {
        var payload: [UInt8] = [9, 0, 0, 0, 0, 0, 0, 0]
        for i in 0..<9 {
            var region: [UInt8] = []
            for value in [UInt64(i) << 32, 0x1000, 0x7f00_0000_0000 + UInt64(i) << 32, 0] {
                withUnsafeBytes(of: value.littleEndian) { region.append(contentsOf: $0) }
            }
            payload += region
        }
        let error = Self.decodeError(Self.frame(request: 5, payload: payload))
        guard case .invalidRequest = error else {
            Issue.record("expected invalidRequest, got \(String(describing: error))")
            return
        }
        #expect(error?.requiresDisconnect == false)
    }

    @Test("GET_CONFIG/SET_CONFIG: size over 256 is refused; size must match the payload")
    func configSizes() {
        for request in [UInt32(24), 25] {
            var payload: [UInt8] = [0, 0, 0, 0, 0x2c, 0x01, 0, 0, 0, 0, 0, 0]  // offset 0, size 300
            payload += [UInt8](repeating: 0, count: 300)
            let tooBig = Self.decodeError(Self.frame(request: request, payload: payload))
            #expect(Self.isBadPayloadSize(tooBig), "size 300: \(String(describing: tooBig))")
            #expect(tooBig?.requiresDisconnect == true)

            let header57: [UInt8] = [0, 0, 0, 0, 57, 0, 0, 0, 0, 0, 0, 0]
            for extra in [0, 56, 58] {
                let error = Self.decodeError(Self.frame(request: request,
                                                        payload: header57 + [UInt8](repeating: 0, count: extra)))
                #expect(Self.isBadPayloadSize(error), "size 57 with \(extra) bytes")
            }
            let short = Self.decodeError(Self.frame(request: request, payload: [0, 0, 0, 0, 0, 0, 0, 0]))
            #expect(Self.isBadPayloadSize(short), "payload shorter than the config header")
        }
    }

    // MARK: - Headers

    @Test("a header whose version is not 1 is refused and disconnects", arguments: [UInt32(0), 2, 3, 0x8, 0xa])
    func badVersion(_ flags: UInt32) {
        let bytes = Self.frame(request: 1, flags: flags, payload: [])
        let error = Self.decodeError(bytes)
        #expect(Self.isBadHeader(error), "flags \(flags)")
        #expect(error?.requiresDisconnect == true)
    }

    @Test("a payload of more than 4096 bytes is refused; 4096 passes the header check")
    func payloadLimit() throws {
        let header = MessageHeader(request: 1, flags: MessageHeader.version, size: 4097)
        #expect(throws: VhostUserError.self) { try MessageCodec.validate(header) }
        do {
            try MessageCodec.validate(header)
        } catch {
            #expect(Self.isBadHeader(error))
            #expect(error.requiresDisconnect)
        }
        let huge = MessageHeader(request: 1, flags: MessageHeader.version, size: .max)
        #expect(throws: VhostUserError.self) { try MessageCodec.validate(huge) }
        try MessageCodec.validate(MessageHeader(request: 5, flags: MessageHeader.version, size: 4096))
    }

    @Test("a frontend message flagged as a reply is refused")
    func replyFlagFromFrontend() {
        // MessageCodec.validate documents "not a reply"; a backend never expects one here.
        let error = Self.decodeError(Self.frame(request: 1, flags: 0x5, payload: []))
        #expect(Self.isBadHeader(error), "\(String(describing: error))")
    }

    @Test("an unknown request code is unknownRequest and keeps the connection",
          arguments: [UInt32(0), 41, 42, 43, 1000, .max])
    func unknownRequest(_ code: UInt32) {
        let error = Self.decodeError(Self.frame(request: code, payload: [0, 0, 0, 0, 0, 0, 0, 0]))
        #expect(error == .unknownRequest(code))
        #expect(error?.requiresDisconnect == false)
    }

    // MARK: - Replies

    static func replyHeader(_ bytes: [UInt8]) -> MessageHeader {
        bytes.withUnsafeBytes { MessageHeader.decode($0) }
    }

    @Test("u64 and vring-state replies: flags exactly 0x5, 8 bytes")
    func u64Replies() {
        for request in [FrontendRequest.getFeatures, .getProtocolFeatures, .getQueueNum, .getMaxMemSlots, .setMemTable] {
            let bytes = MessageCodec.replyU64(request, 0x1_7500_7e46)
            let header = Self.replyHeader(bytes)
            #expect(header == MessageHeader(request: request.rawValue, flags: 0x5, size: 8))
            #expect(bytes.count == 20)
            #expect(MessageCodec.decodeU64(Array(bytes[12...])) == 0x1_7500_7e46)
        }
        let base = MessageCodec.replyVringState(.getVringBase, VringState(index: 1, num: 2028))
        #expect(Self.replyHeader(base) == MessageHeader(request: 11, flags: 0x5, size: 8))
        #expect(Array(base[12...]) == [1, 0, 0, 0, 0xec, 0x07, 0, 0])
        #expect(MessageCodec.decodeU64([1, 2, 3]) == nil)
    }

    @Test("GET_CONFIG reply: flags 0x5, size 12 + requested; failure is size 0",
          arguments: [0, 36, 48, 57, 256])
    func configReply(_ size: Int) {
        let access = ConfigAccess(offset: 0, size: UInt32(size), flags: 0, bytes: (0..<size).map { UInt8($0 & 0xff) })
        let bytes = MessageCodec.replyConfig(access)
        #expect(Self.replyHeader(bytes) == MessageHeader(request: 24, flags: 0x5, size: UInt32(12 + size)))
        #expect(bytes.count == 12 + 12 + size)
        #expect(Array(bytes.dropFirst(24)) == access.bytes)
        let failure = MessageCodec.replyConfig(nil)
        #expect(failure == [24, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test("GET_INFLIGHT_FD reply: flags 0x5, 24 bytes")
    func inflightReply() {
        let bytes = MessageCodec.replyInflight(InflightArea(mmapSize: 0x5000, mmapOffset: 0, queueCount: 2, queueSize: 128))
        #expect(Self.replyHeader(bytes) == MessageHeader(request: 31, flags: 0x5, size: 24))
        #expect(bytes.count == 36)
        #expect(Array(bytes[28..<32]) == [2, 0, 128, 0])
        #expect(Array(bytes[32..<36]) == [0, 0, 0, 0])
    }

    // MARK: - Drip feeding

    @Test("decoding does not depend on how the bytes are split", arguments: samples)
    func dripFeed(_ message: FrontendMessage) {
        let bytes = MessageCodec.encode(message, needReply: true)
        let whole = MessageAssembler.decode(bytes, cuts: [])
        #expect(whole.count == 1)
        #expect((try? whole.first?.get()) == message)
        #expect(MessageAssembler.dripFeed(bytes) == whole, "one byte at a time")
        for cut in 0...bytes.count {
            #expect(MessageAssembler.decode(bytes, cuts: [cut]) == whole, "cut at \(cut)")
        }
        // Every pair of cuts for messages up to 64 bytes (a few thousand splits at most).
        if bytes.count <= 64 {
            for first in 1..<bytes.count {
                for second in first..<bytes.count {
                    let result = MessageAssembler.decode(bytes, cuts: [first, second])
                    if result != whole {
                        Issue.record("cuts at \(first), \(second)")
                        return
                    }
                }
            }
        }
    }

    @Test("a stream of every sample drip-fed decodes to the same sequence")
    func dripFeedStream() {
        let stream = Self.samples.flatMap { MessageCodec.encode($0) }
        let decoded = MessageAssembler.dripFeed(stream)
        #expect(decoded.count == Self.samples.count)
        #expect(decoded.compactMap { try? $0.get() } == Self.samples)
        var random = SeededRandom(environmentOr: 17)
        for _ in 0..<50 {
            let cuts = (0..<20).map { _ in Int.random(in: 0...stream.count, using: &random) }.sorted()
            let result = MessageAssembler.decode(stream, cuts: cuts)
            #expect(result.compactMap { try? $0.get() } == Self.samples, "cuts \(cuts); \(random.reproduceHint)")
        }
    }

    @Test("a bad header is reported as soon as its 12 bytes arrive, before any payload")
    func headerCheckedEarly() {
        var assembler = MessageAssembler()
        let bad = MessageHeader(request: 5, flags: 1, size: 5000)
        var bytes: [UInt8] = []
        bad.encode(into: &bytes)
        #expect(assembler.feed(bytes.prefix(11)).isEmpty)
        #expect(assembler.error == nil)
        #expect(assembler.feed(bytes.suffix(1)).isEmpty)
        #expect(Self.isBadHeader(assembler.error))
    }

    @Test("messages before a bad header are delivered, whatever the split")
    func messagesBeforeBadHeader() {
        let stream = MessageCodec.encode(.getFeatures) + MessageCodec.encode(.setOwner)
            + Self.frame(request: 1, flags: 2, payload: []) + MessageCodec.encode(.getQueueNum)
        for result in [MessageAssembler.decode(stream, cuts: []), MessageAssembler.dripFeed(stream)] {
            #expect(result.count == 3)
            #expect(result.prefix(2).compactMap { try? $0.get() } == [.getFeatures, .setOwner])
            guard case .failure(let error) = result.last else {
                Issue.record("the stream did not end with the header error")
                continue
            }
            #expect(Self.isBadHeader(error))
        }
    }

    @Test("an unknown request in a stream does not stop the messages after it")
    func unknownInStream() {
        let stream = Self.frame(request: 99, payload: [1, 2, 3]) + MessageCodec.encode(.getFeatures)
        let result = MessageAssembler.dripFeed(stream)
        #expect(result.count == 2)
        #expect(result.last.flatMap { try? $0.get() } == .getFeatures)
    }
}
