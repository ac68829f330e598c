import MemoryServer
import RemoteMem

/// The memory server's frame path without sockets, for fuzzing: bytes go through `FrameDecoder`
/// with the server's request limits, each frame through `RequestHandler.handle` against a real
/// `VolumeStore` on a small `PageArena`, and every reply is checked against what must hold for
/// any input (`violation`). Shared by the seeded tests (`FuzzTests.swift`) and the libFuzzer
/// target (`Fuzz/`), so both check the same invariants.
///
/// The store starts with one volume, `fuzz`, opened (handle `volumeHandle`, epoch
/// `volumeEpoch`), so random frames reach the data path without a handshake first.
public final class ServerFrameHarness {
    /// A small arena, so random WRITEs fill it and `FULL` is exercised.
    public static let capacityFrames = 16
    public static let volumeName = "fuzz"
    public static let volumePages: UInt64 = 256

    public let store: VolumeStore
    public let handler: RequestHandler
    public private(set) var handshake = Handshake()
    public let volumeHandle: UInt32
    public let volumeEpoch: UInt64
    /// Where READ replies land: exactly the size `RequestHandler` requires.
    public let pageBuffer: UnsafeMutableRawBufferPointer
    /// Frames handled, and of them those refused as malformed (connection closed).
    public private(set) var framesHandled = 0
    public private(set) var framesRefused = 0
    /// Replies per status, for tests that check the generator reaches them.
    public private(set) var statuses: [UInt16: Int] = [:]

    /// `hasher`: a weak one (`PageHasher.truncated`) forces hash collisions on the write path.
    public init(clusterKey: ClusterKey? = nil, hasher: PageHasher = .random(), capacityFrames: Int = capacityFrames) throws {
        store = try VolumeStore(arena: try PageArena(capacityBytes: UInt64(capacityFrames * PageArena.frameBytes)),
                                hasher: hasher)
        handler = RequestHandler(store: store, counters: ServerCounters(), serverID: (0..<16).map { UInt8($0) },
                                 clusterKey: clusterKey)
        try store.create(name: Self.volumeName, sizeBytes: Self.volumePages * UInt64(WireLimits.pageSize))
        let opened = try store.open(name: Self.volumeName, minimumEpoch: 1)
        volumeHandle = opened.handle
        volumeEpoch = opened.epoch
        pageBuffer = .allocate(byteCount: Int(WireLimits.pagesPerRequestMax) * WireLimits.pageSize, alignment: 4096)
    }

    deinit { pageBuffer.deallocate() }

    /// A new connection: handshake state starts over (the store stays).
    public func reconnect() { handshake = Handshake() }

    /// Handles one whole frame (`payload.count` must equal `header.length`, as the decoder
    /// guarantees). Returns the reply or the refusal, and the first violated invariant if any.
    public func handle(_ header: FrameHeader, payload: [UInt8]) -> (Result<Reply, FrameError>, violation: String?) {
        precondition(payload.count == Int(header.length))
        let result = payload.withUnsafeBytes { raw in
            Result { () throws(FrameError) in try handler.handle(header, payload: raw, pageBuffer: pageBuffer, handshake: &handshake) }
        }
        framesHandled += 1
        switch result {
        case .success(let reply):
            statuses[reply.header.status, default: 0] += 1
            return (result, Self.violation(reply, to: header, pageBufferBytes: pageBuffer.count) ?? accountingViolation())
        case .failure:
            framesRefused += 1
            reconnect()  // the server closes the connection after a malformed payload
            return (result, accountingViolation())
        }
    }

    /// Feeds `stream` as one connection's received bytes, cut into pieces at `cuts` (sorted
    /// offsets), and handles every frame. Stops where the server would close the connection (a
    /// header over its limit, a malformed payload, a reply that closes). Returns the first
    /// violation, or nil.
    public func run(stream: [UInt8], cuts: [Int] = []) -> String? {
        reconnect()
        defer { reconnect() }
        var decoder = FrameDecoder(limit: FrameDecoder.requestLimit)
        var start = 0
        for end in cuts + [stream.count] where end >= start && end <= stream.count {
            decoder.append(stream[start..<end])
            start = end
            while true {
                let frame: (header: FrameHeader, payload: [UInt8])?
                do {
                    frame = try decoder.next()
                } catch {
                    return nil  // a header over its limit: refused before its payload is read
                }
                guard let frame else { break }
                if frame.payload.count > FrameDecoder.requestLimit(frame.header) {
                    return "decoder passed \(frame.payload.count) payload bytes over the limit \(FrameDecoder.requestLimit(frame.header))"
                }
                let (result, violation) = handle(frame.header, payload: frame.payload)
                if let violation { return violation }
                switch result {
                case .failure: return nil
                case .success(let reply) where reply.closesConnection: return nil
                case .success: continue
                }
            }
        }
        return nil
    }

    /// What must hold for every reply to `request`, whatever the request was.
    public static func violation(_ reply: Reply, to request: FrameHeader, pageBufferBytes: Int) -> String? {
        let header = reply.header
        guard header.opcode == request.opcode, header.requestID == request.requestID else {
            return "reply \(header) does not echo opcode and request id of \(request)"
        }
        guard let status = header.statusValue else { return "reply status \(header.status) is not a known status" }
        switch reply.payload {
        case .none:
            guard header.length == 0 else { return "reply without payload announces \(header.length) bytes" }
        case .bytes(let bytes):
            guard !bytes.isEmpty, Int(header.length) == bytes.count else {
                return "reply carries \(bytes.count) bytes but announces \(header.length)"
            }
            guard bytes.count <= WireLimits.payloadBytesMax else { return "reply of \(bytes.count) bytes over the limit" }
            guard status == .ok || (status == .unsupportedVersion && request.opcodeValue == .hello) else {
                return "\(status) reply with a payload"
            }
        case .pageBuffer(let count):
            guard request.opcodeValue == .read, status == .ok, Int(header.length) == count,
                  count == Int(request.pageCount) * WireLimits.pageSize, count <= pageBufferBytes
            else { return "page-buffer reply of \(count) bytes to \(request)" }
        }
        if request.opcodeValue == nil, status != .unsupported, status != .unauthenticated {
            return "unknown opcode \(request.opcode) answered \(status)"
        }
        if reply.closesConnection, status != .unsupportedVersion, status != .authFailed {
            return "a \(status) reply closes the connection"
        }
        if status == .ok, let opcode = request.opcodeValue, [.read, .write, .trim].contains(opcode),
           request.pageCount == 0 || request.pageCount > (opcode == .trim ? WireLimits.trimPagesMax : WireLimits.pagesPerRequestMax) {
            return "\(opcode) of \(request.pageCount) pages answered OK"
        }
        return nil
    }

    /// The arena lends exactly the frames the volumes point at, never more than it has, and
    /// every share count is the number of pages pointing at its frame (`auditSharing`).
    public func accountingViolation() -> String? {
        let used = store.arena.usedFrames
        guard used >= 0, used <= store.arena.capacityFrames else {
            return "arena uses \(used) of \(store.arena.capacityFrames) frames"
        }
        let stored = store.list().reduce(0) { $0 + Int($1.storedPages) }
        guard stored >= used else { return "volumes hold \(stored) pages but the arena lends \(used) frames" }
        return store.auditSharing()
    }
}
