import Glibc

/// Gathered sends and scattered receives on a TCP connection: a frame header plus page buffers
/// that are not adjacent in memory (cache frames), moved by one system call and no staging copy.
extension TCPConnection {
    /// Most buffers one vectored call takes (a header plus a full 32-page request fits easily).
    public static let vectorCountMax = 64

    /// Writes every byte of `buffers`, in order, with `writev(2)` (looping over short writes).
    /// Traps if given more than `vectorCountMax` buffers.
    public func send(gathering buffers: UnsafeBufferPointer<UnsafeRawBufferPointer>) throws(Errno) {
        precondition(buffers.count <= Self.vectorCountMax, "too many buffers for one writev")
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count) { (vectors) throws(Errno) in
            for (i, buffer) in buffers.enumerated() {
                vectors[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: buffer.baseAddress), iov_len: buffer.count)
            }
            try transferAll(vectors, endOfFileIsError: false) { (vector, count) in
                writev(descriptor.rawValue, vector, count)
            }
        }
    }

    /// Reads exactly the total size of `buffers` with `readv(2)`, filling them in order; EOF
    /// throws `ECONNRESET`. Traps if given more than `vectorCountMax` buffers.
    public func receiveExactly(scattering buffers: UnsafeBufferPointer<UnsafeMutableRawBufferPointer>) throws(Errno) {
        precondition(buffers.count <= Self.vectorCountMax, "too many buffers for one readv")
        try withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count) { (vectors) throws(Errno) in
            for (i, buffer) in buffers.enumerated() {
                vectors[i] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            }
            try transferAll(vectors, endOfFileIsError: true) { (vector, count) in
                readv(descriptor.rawValue, vector, count)
            }
        }
    }
}

/// Calls `call` until every byte described by `vectors` moved, advancing the vectors in place
/// past what each call transferred.
private func transferAll(_ vectors: UnsafeMutableBufferPointer<iovec>, endOfFileIsError: Bool,
                         _ call: (UnsafePointer<iovec>, Int32) -> Int) throws(Errno) {
    var index = 0
    while index < vectors.count && vectors[index].iov_len == 0 { index += 1 }
    while index < vectors.count {
        // SAFETY: `index` < vectors.count, so the pointer and count describe live iovecs.
        let moved = try retryingInterrupts { call(UnsafePointer(vectors.baseAddress! + index), Int32(vectors.count - index)) }
        if moved == 0 && endOfFileIsError { throw .connectionReset }
        var left = moved
        while left > 0 {
            if left >= vectors[index].iov_len {
                left -= vectors[index].iov_len
                index += 1
            } else {
                // SAFETY: advancing within the same buffer, by fewer bytes than it has left.
                vectors[index].iov_base = vectors[index].iov_base.map { $0 + left }
                vectors[index].iov_len -= left
                left = 0
            }
        }
        while index < vectors.count && vectors[index].iov_len == 0 { index += 1 }
    }
}
