import LinuxSystem

/// One message the backend sent back, as the frontend received it. It holds the header, the
/// payload bytes, and any file descriptors that came with it.
///
/// The type is `~Copyable` because it owns the received descriptors. A descriptor nobody
/// `take`s is closed when the reply goes away (GET_INFLIGHT_FD is the only reply that carries
/// one). The typed accessors check the payload size against the request type before reading a
/// field, as `MessageCodec.decode` does for the other direction.
public struct FrontendReply: ~Copyable {
    public let header: MessageHeader
    public let payload: [UInt8]
    public var fileDescriptors: ReceivedFileDescriptors

    public init(header: MessageHeader, payload: [UInt8], fileDescriptors: consuming ReceivedFileDescriptors) {
        self.header = header
        self.payload = payload
        self.fileDescriptors = fileDescriptors
    }

    /// The request this message answers, if the code is one we know.
    public var request: FrontendRequest? { FrontendRequest(rawValue: header.request) }

    private var requestName: String { FrontendError.requestName(header.request) }

    private func requireSize(_ expected: Int) throws(FrontendError) {
        guard payload.count == expected else {
            throw .badReplyPayload(request: requestName, size: payload.count, expected: "\(expected)")
        }
    }

    /// A u64 payload: features, queue count, memory slots, or a REPLY_ACK status.
    public func u64() throws(FrontendError) -> UInt64 {
        try requireSize(8)
        return payload.withUnsafeBytes { ByteReader($0).u64Value() }
    }

    /// A `vhost_vring_state` payload (the GET_VRING_BASE reply).
    public func vringState() throws(FrontendError) -> VringState {
        try requireSize(VringState.sizeBytes)
        return payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return VringState(index: reader.u32(), num: reader.u32())
        }
    }

    /// A GET_CONFIG payload. Size 0 is the backend's way of reporting failure (spec) and comes
    /// back as `badConfig`.
    public func configAccess() throws(FrontendError) -> ConfigAccess {
        guard !payload.isEmpty else { throw .badConfig("empty payload (the backend reports an error)") }
        guard payload.count >= ConfigAccess.headerBytes else {
            throw .badReplyPayload(request: requestName, size: payload.count,
                                   expected: "≥ \(ConfigAccess.headerBytes)")
        }
        return payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            let offset = reader.u32()
            let size = reader.u32()
            let flags = reader.u32()
            let available = raw.count - ConfigAccess.headerBytes
            return ConfigAccess(offset: offset, size: size, flags: flags,
                                bytes: reader.bytes(min(Int(size), available)))
        }
    }

    /// A GET_INFLIGHT_FD payload: 24 bytes, the size QEMU checks.
    public func inflightArea() throws(FrontendError) -> InflightArea {
        try requireSize(InflightArea.sizeBytes)
        return payload.withUnsafeBytes { raw in
            var reader = ByteReader(raw)
            return InflightArea(mmapSize: reader.u64(), mmapOffset: reader.u64(),
                                queueCount: reader.u16(), queueSize: reader.u16())
        }
    }

    /// Takes ownership of the first descriptor that came with the reply, if there was one.
    public mutating func takeFileDescriptor() -> FileDescriptor? {
        fileDescriptors.take(0)
    }
}
