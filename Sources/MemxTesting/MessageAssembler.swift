import VhostUser

/// Reassembles vhost-user messages from a byte stream that arrives in arbitrary pieces, the way
/// a socket delivers them: the 12-byte header first (checked with `MessageCodec.validate` as
/// soon as it is complete), then `size` payload bytes. Tests drip-feed encoded messages through
/// it to show that decoding does not depend on how the bytes were split (NIO's
/// `ByteToMessageDecoderVerifier`; style rule 13).
///
/// File descriptors are not modelled: they ride on the header's `recvmsg` and do not change
/// framing.
public struct MessageAssembler {
    /// One complete message: its header and exactly `header.size` payload bytes.
    public struct Frame: Equatable, Sendable {
        public var header: MessageHeader
        public var payload: [UInt8]
    }

    private var pending: [UInt8] = []
    private var header: MessageHeader?

    public init() {}

    /// True if no partial message is buffered.
    public var isIdle: Bool { pending.isEmpty && header == nil }

    /// The header error that ended the stream, if any. Once set, `feed` ignores further bytes:
    /// the server would have closed the connection.
    public private(set) var error: VhostUserError?

    /// Appends `bytes` and returns every message they completed, in order. If a header is
    /// invalid, the messages before it are still returned and `error` is set.
    public mutating func feed(_ bytes: some Collection<UInt8>) -> [Frame] {
        guard error == nil else { return [] }
        pending.append(contentsOf: bytes)
        var frames: [Frame] = []
        while true {
            if header == nil {
                guard pending.count >= MessageHeader.sizeBytes else { break }
                let decoded = pending.withUnsafeBytes { MessageHeader.decode($0) }
                do {
                    try MessageCodec.validate(decoded)
                } catch {
                    self.error = error
                    break
                }
                header = decoded
                pending.removeFirst(MessageHeader.sizeBytes)
            }
            guard let current = header, pending.count >= Int(current.size) else { break }
            frames.append(Frame(header: current, payload: Array(pending.prefix(Int(current.size)))))
            pending.removeFirst(Int(current.size))
            header = nil
        }
        return frames
    }

    /// Feeds `bytes` cut at `cuts` (sorted offsets strictly inside `bytes`), then decodes every
    /// completed frame. A header error, or a decode error that requires a disconnect, ends the run
    /// and is returned last.
    public static func decode(_ bytes: [UInt8], cuts: [Int]) -> [Result<FrontendMessage, VhostUserError>] {
        var assembler = MessageAssembler()
        var results: [Result<FrontendMessage, VhostUserError>] = []
        var start = 0
        for end in cuts + [bytes.count] {
            precondition(end >= start && end <= bytes.count, "cuts must be sorted offsets inside the bytes")
            for frame in assembler.feed(bytes[start..<end]) {
                let result = frame.payload.withUnsafeBytes { raw in
                    Result { () throws(VhostUserError) in try MessageCodec.decode(frame.header, payload: raw) }
                }
                results.append(result)
                // The connection survives errors that do not require a disconnect.
                if case .failure(let error) = result, error.requiresDisconnect { return results }
            }
            if let error = assembler.error {
                results.append(.failure(error))
                return results
            }
            start = end
        }
        return results
    }

    /// Feeds `bytes` one byte at a time.
    public static func dripFeed(_ bytes: [UInt8]) -> [Result<FrontendMessage, VhostUserError>] {
        decode(bytes, cuts: bytes.isEmpty ? [] : Array(1..<bytes.count))
    }
}
