import CMemxShims
import Glibc

/// A listening `AF_UNIX` stream socket at a path (the vhost-user socket QEMU connects to).
public struct UnixListener: ~Copyable {
    public let descriptor: FileDescriptor
    public let path: String

    /// Binds and listens at `path`. A stale socket file left by a killed process is replaced;
    /// any other existing file is an error (`EEXIST`) so we never delete a user's file.
    ///
    /// The file appears at `bind`, a moment before `listen`: a client that connects in between
    /// is refused and should retry (QEMU's `reconnect=` does; the test harness waits until the
    /// socket is listed as listening). Binding under a temporary name and renaming would close
    /// that window but leave the kernel reporting the temporary name (`ss -x`,
    /// `/proc/net/unix`), which operators and scripts look for.
    public init(path: String, backlog: Int32 = 4) throws(Errno) {
        var info = stat()
        if lstat(path, &info) == 0 {
            guard (info.st_mode & S_IFMT) == S_IFSOCK else { throw .fileExists }
            unlink(path)
        }
        let fd = try retryingInterrupts { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let owned = FileDescriptor(adopting: fd)
        var address = try UnixAddress(path: path)
        let rc = address.withSockaddr { bind(fd, $0, $1) }
        if rc < 0 { throw Errno.current }
        if listen(fd, backlog) < 0 { throw Errno.current }
        self.descriptor = owned
        self.path = path
    }

    /// Accepts one connection (blocking).
    public func accept() throws(Errno) -> UnixConnection {
        let fd = try retryingInterrupts { memx_accept_cloexec(descriptor.rawValue) }
        return UnixConnection(FileDescriptor(adopting: fd))
    }

    /// Removes the socket file (on clean shutdown).
    public func unlinkPath() { unlink(path) }
}

/// A connected `AF_UNIX` stream socket that carries file descriptors with its bytes.
public struct UnixConnection: ~Copyable {
    public let descriptor: FileDescriptor

    public init(_ descriptor: consuming FileDescriptor) { self.descriptor = descriptor }

    /// Connects to the socket at `path`.
    public init(connectingTo path: String) throws(Errno) {
        let fd = try retryingInterrupts { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let owned = FileDescriptor(adopting: fd)
        var address = try UnixAddress(path: path)
        while true {
            let rc = address.withSockaddr { Glibc.connect(fd, $0, $1) }
            if rc == 0 { break }
            let error = Errno.current
            if error != .interrupted { throw error }
        }
        self.descriptor = owned
    }

    /// The raw ends of a connected pair (`socketpair(2)`), for tests; wrap each with
    /// `UnixConnection(FileDescriptor(adopting:))`.
    public static func rawPair() throws(Errno) -> (CInt, CInt) {
        var fds: [CInt] = [-1, -1]
        let rc = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
        if rc < 0 { throw Errno.current }
        return (fds[0], fds[1])
    }

    /// Sends all of `bytes`; `fds` travel with the first byte.
    public func send(_ bytes: UnsafeRawBufferPointer, fds: [CInt] = []) throws(Errno) {
        var done = 0
        var pendingFDs = fds
        while done < bytes.count || (done == 0 && bytes.count == 0) {
            let n = pendingFDs.withUnsafeBufferPointer { fdBuffer in
                memx_send_with_fds(descriptor.rawValue, bytes.baseAddress! + done, bytes.count - done,
                                   fdBuffer.baseAddress, Int32(fdBuffer.count))
            }
            if n < 0 {
                let error = Errno.current
                if error == .interrupted { continue }
                throw error
            }
            pendingFDs = []
            done += n
            if bytes.count == 0 { break }
        }
    }

    /// Receives exactly `buffer.count` bytes, collecting any descriptors that arrive on the way.
    /// EOF before the first byte throws `ECONNRESET` too; callers tell a clean hang-up apart
    /// with `receiveOrEOF`.
    public func receiveExactly(into buffer: UnsafeMutableRawBufferPointer,
                               fds: inout ReceivedFileDescriptors) throws(Errno) {
        guard try receiveOrEOF(into: buffer, fds: &fds) else { throw .connectionReset }
    }

    /// Like `receiveExactly`, but returns false on a clean EOF before any byte arrived.
    public func receiveOrEOF(into buffer: UnsafeMutableRawBufferPointer,
                             fds: inout ReceivedFileDescriptors) throws(Errno) -> Bool {
        var done = 0
        while done < buffer.count {
            var count: Int32 = 0
            var received: (CInt, CInt, CInt, CInt, CInt, CInt, CInt, CInt) = (-1, -1, -1, -1, -1, -1, -1, -1)
            let n = withUnsafeMutableBytes(of: &received) { raw in
                memx_recv_with_fds(descriptor.rawValue, buffer.baseAddress! + done, buffer.count - done,
                                   raw.baseAddress!.assumingMemoryBound(to: CInt.self), &count)
            }
            if n < 0 {
                let error = Errno.current
                if error == .interrupted { continue }
                throw error
            }
            withUnsafeBytes(of: &received) { raw in
                for i in 0..<Int(count) {
                    let fd = raw.load(fromByteOffset: i * 4, as: CInt.self)
                    if fds.count < ReceivedFileDescriptors.capacity {
                        fds.append(fd)
                    } else {
                        _ = Glibc.close(fd)
                    }
                }
            }
            if n == 0 {
                if done == 0 { return false }
                throw .connectionReset
            }
            done += n
        }
        return true
    }
}

/// A `sockaddr_un` built from a path, checked for length.
struct UnixAddress {
    var storage = sockaddr_un()

    init(path: String) throws(Errno) {
        storage.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: storage.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity else { throw .invalidArgument }
        withUnsafeMutableBytes(of: &storage.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }

    mutating func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
    }
}

extension UnixConnection {
    /// Sends `bytes` (an array), `fds` attached to the first byte.
    public func send(bytes: [UInt8], fds: [CInt] = []) throws(Errno) {
        var failure: Errno?
        bytes.withUnsafeBytes { raw in
            do throws(Errno) { try send(raw, fds: fds) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Receives exactly `count` bytes into a new array (control path only).
    public func receive(count: Int, fds: inout ReceivedFileDescriptors) throws(Errno) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        guard count > 0 else { return bytes }
        var failure: Errno?
        bytes.withUnsafeMutableBytes { raw in
            do throws(Errno) { try receiveExactly(into: raw, fds: &fds) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Receives a message header's worth of bytes, or nil on a clean EOF before any byte.
    public func receiveOrEOF(count: Int, fds: inout ReceivedFileDescriptors) throws(Errno) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: Errno?
        var open = true
        bytes.withUnsafeMutableBytes { raw in
            do throws(Errno) { open = try receiveOrEOF(into: raw, fds: &fds) } catch { failure = error }
        }
        if let failure { throw failure }
        return open ? bytes : nil
    }
}
