/// Why a key file cannot be used: each a one-line message naming the file (the command lines
/// prefix the flag and exit with status 2).
public enum ClusterKeyError: Error, Equatable, Sendable, CustomStringConvertible {
    case unreadable(path: String, reason: String)
    case notARegularFile(path: String)
    /// Group or others may read it (`mode` is the permission bits).
    case tooOpen(path: String, mode: UInt32)
    case empty(path: String)
    case tooShort(path: String?, bytes: Int)
    case tooLong(path: String?, bytes: Int)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read the key file \(path): \(reason)"
        case .notARegularFile(let path): "the key file \(path) is not a regular file"
        case .tooOpen(let path, let mode):
            "the key file \(path) has mode \(String(mode, radix: 8)), readable by group or others: run chmod 600 \(path)"
        case .empty(let path): "the key file \(path) is empty (make one: head -c 32 /dev/urandom > FILE; chmod 600 FILE)"
        case .tooShort(let path, let bytes):
            "\(Self.subject(path)) has \(bytes) bytes, fewer than \(ClusterKey.bytesMin) (make one: head -c 32 /dev/urandom > FILE)"
        case .tooLong(let path, let bytes):
            "\(Self.subject(path)) is over \(ClusterKey.bytesMax) bytes (\(bytes) read)"
        }
    }

    private static func subject(_ path: String?) -> String { path.map { "the key file \($0)" } ?? "the key" }
}
