import CMemxShims
import Glibc

/// The secret a pool's servers and clients share (`--key-file`), and the HMAC-SHA256 proofs of
/// it that the `AUTH` exchange carries (docs/PROTOCOL.md, "Authentication"). The key itself never
/// crosses the wire: each side proves it holds the key by a MAC over both HELLO nonces and the
/// server id, so a proof is good for one connection only.
///
/// Its `description` never shows the key.
public struct ClusterKey: Sendable, CustomStringConvertible {
    /// The fewest key bytes: 128 bits.
    public static let bytesMin = 16
    /// The most key bytes (a key file is read whole; HMAC hashes a key over 64 bytes first).
    public static let bytesMax = 4096
    /// Bytes of a proof (an HMAC-SHA256 tag).
    public static let proofBytes = Int(MEMX_HMAC_SHA256_BYTES)

    /// Domain-separation labels: the client's and the server's proofs of the same connection
    /// differ, so neither side can reflect the other's proof back as its own.
    static let clientLabel = Array("memx-auth-client".utf8)
    static let serverLabel = Array("memx-auth-server".utf8)

    private let bytes: [UInt8]

    /// A key of `bytes` (16 to 4096 of them).
    public init(bytes: [UInt8]) throws(ClusterKeyError) {
        guard bytes.count >= Self.bytesMin else { throw .tooShort(path: nil, bytes: bytes.count) }
        guard bytes.count <= Self.bytesMax else { throw .tooLong(path: nil, bytes: bytes.count) }
        self.bytes = bytes
    }

    /// Reads a key file as `ssh` reads a private key: it must be a readable regular file that
    /// neither its group nor others may read (mode & 0o077 == 0), of 16 to 4096 bytes once one
    /// trailing newline is dropped (so `echo`-made keys work). Binary keys are fine.
    public init(contentsOf path: String) throws(ClusterKeyError) {
        // O_NONBLOCK: a FIFO given as the key file must not hang the open (it is refused below).
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        // fstat of the opened file, not stat of the path: what is checked is what is read.
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { throw .notARegularFile(path: path) }
        let mode = UInt32(info.st_mode) & 0o777
        guard mode & 0o077 == 0 else { throw .tooOpen(path: path, mode: mode) }
        // Read one byte past the longest key with its newline, so an overlong file is told apart.
        var contents = [UInt8](repeating: 0, count: Self.bytesMax + 2)
        var count = 0
        while count < contents.count {
            let n = contents.withUnsafeMutableBytes { buffer in
                // SAFETY: reads into the array's remaining `buffer.count - count` bytes.
                read(fd, buffer.baseAddress! + count, buffer.count - count)
            }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw .unreadable(path: path, reason: String(cString: strerror(errno)))
            }
            count += n
        }
        contents.removeSubrange(count...)
        if contents.last == UInt8(ascii: "\n") { contents.removeLast() }
        guard !contents.isEmpty else { throw .empty(path: path) }
        guard contents.count >= Self.bytesMin else { throw .tooShort(path: path, bytes: contents.count) }
        guard contents.count <= Self.bytesMax else { throw .tooLong(path: path, bytes: contents.count) }
        bytes = contents
    }

    public var description: String { "ClusterKey(\(bytes.count) bytes)" }

    // MARK: - Proofs

    /// The client's proof for one connection: HMAC(key, "memx-auth-client" ‖ client nonce ‖
    /// server nonce ‖ server id), the `AUTH` request's payload.
    public func clientProof(clientNonce: [UInt8], serverNonce: [UInt8], serverID: [UInt8]) -> [UInt8] {
        mac(Self.clientLabel, clientNonce, serverNonce, serverID)
    }

    /// The server's proof for one connection: HMAC(key, "memx-auth-server" ‖ client nonce ‖
    /// server nonce ‖ server id), the `AUTH` reply's payload.
    public func serverProof(clientNonce: [UInt8], serverNonce: [UInt8], serverID: [UInt8]) -> [UInt8] {
        mac(Self.serverLabel, clientNonce, serverNonce, serverID)
    }

    /// True if `proof` equals `expected`, compared in constant time (a MAC check must not leak
    /// how many leading bytes matched). Proofs of another length are false.
    public static func proofsMatch(_ proof: [UInt8], _ expected: [UInt8]) -> Bool {
        guard proof.count == proofBytes, expected.count == proofBytes else { return false }
        return proof.withUnsafeBytes { a in
            expected.withUnsafeBytes { b in
                // SAFETY: both buffers hold exactly `proofBytes` bytes (checked above).
                memx_constant_time_equal(a.baseAddress!, b.baseAddress!, proofBytes) == 1
            }
        }
    }

    /// HMAC-SHA256 under the key of the parts, concatenated. Labels are distinct and nonces and
    /// ids fixed-length (16 bytes), so the concatenation is unambiguous.
    private func mac(_ parts: [UInt8]...) -> [UInt8] { authenticationCode(of: parts.flatMap { $0 }) }

    /// HMAC-SHA256 of `message` under the key (what the proofs are made of; public so tests can
    /// check it against RFC 4231's vectors).
    public func authenticationCode(of message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Self.proofBytes)
        let status = bytes.withUnsafeBytes { key in
            message.withUnsafeBytes { data in
                out.withUnsafeMutableBytes { tag in
                    // SAFETY: `tag` holds the 32 bytes HMAC-SHA256 writes; key and data are read
                    // only within their counts.
                    memx_hmac_sha256(key.baseAddress, key.count, data.baseAddress, data.count,
                                     tag.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
        }
        // libcrypto fails here only if it cannot allocate its context: nothing to go on with.
        precondition(status == 0, "HMAC-SHA256 failed in libcrypto")
        return out
    }
}
