import CMemxShims
import Glibc

/// The descriptors that arrived with one message (SCM_RIGHTS), at most `capacity`.
///
/// Whoever handles the message `take`s the ones it expects; every descriptor nobody took is
/// closed when this value goes away, so a hostile or buggy peer cannot leak fds into us
/// (vhost-user spec: "close any unexpected fd").
public struct ReceivedFileDescriptors: ~Copyable {
    public static let capacity = Int(MEMX_MAX_MESSAGE_FDS)

    private var slots: InlineArray<8, CInt> = .init(repeating: -1)
    public private(set) var count: Int = 0

    public init() {}

    mutating func append(_ fd: CInt) {
        precondition(count < Self.capacity)
        slots[count] = fd
        count += 1
    }

    /// Takes ownership of descriptor `index`, or nil if there is none there (or it was taken).
    public mutating func take(_ index: Int = 0) -> FileDescriptor? {
        guard index >= 0, index < count, slots[index] >= 0 else { return nil }
        let fd = slots[index]
        slots[index] = -1
        return FileDescriptor(adopting: fd)
    }

    /// The number of descriptors not yet taken.
    public var remaining: Int {
        var n = 0
        for i in 0..<count where slots[i] >= 0 { n += 1 }
        return n
    }

    deinit {
        for i in 0..<count where slots[i] >= 0 { _ = Glibc.close(slots[i]) }
    }
}
