import CMemxShims
import Glibc

/// A TCP endpoint address: an IPv4 or IPv6 literal (or `localhost`) and a port, parsed from
/// `HOST:PORT` or `[V6]:PORT`. No DNS: memory servers are named by address.
public struct TCPAddress: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let host: String
    public let port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT`; nil (with no exception) for anything else.
    public init?(parsing text: String) {
        var hostPart: Substring
        var portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        if hostPart == "localhost" { hostPart = "127.0.0.1" }
        guard !hostPart.isEmpty, let port = UInt16(portPart) else { return nil }
        self.host = String(hostPart)
        self.port = port
        guard (try? withSockaddr { _, _ in 0 }) != nil else { return nil }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Calls `body` with the address as a `sockaddr`.
    func withSockaddr<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) throws(Errno) -> T {
        if host.contains(":") {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1 else { throw .invalidArgument }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw .invalidArgument }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
    }

    var family: Int32 { host.contains(":") ? AF_INET6 : AF_INET }
}

/// A listening TCP socket (`memx-server --listen`).
public struct TCPListener: ~Copyable {
    public let descriptor: FileDescriptor
    /// The bound port (useful when asked for port 0).
    public let port: UInt16

    public init(address: TCPAddress, backlog: Int32 = 64) throws(Errno) {
        let fd = try retryingInterrupts { socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let owned = FileDescriptor(adopting: fd)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc = try address.withSockaddr { bind(fd, $0, $1) }
        if rc < 0 { throw Errno.current }
        if listen(fd, backlog) < 0 { throw Errno.current }
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = withUnsafePointer(to: &bound) { pointer in
            pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
        descriptor = owned
    }

    /// Accepts one connection (blocking), with TCP_NODELAY set.
    public func accept() throws(Errno) -> TCPConnection {
        let fd = try retryingInterrupts { memx_accept_cloexec(descriptor.rawValue) }
        let connection = TCPConnection(FileDescriptor(adopting: fd))
        connection.setNoDelay()
        return connection
    }
}

/// A connected TCP socket. Reads and writes move whole buffers (looping over short transfers);
/// timeouts come from `setTimeouts`, after which a stalled peer surfaces as `EAGAIN`.
public struct TCPConnection: ~Copyable {
    public let descriptor: FileDescriptor

    public init(_ descriptor: consuming FileDescriptor) { self.descriptor = descriptor }

    /// Connects to `address` within `timeoutMillis`, with TCP_NODELAY set.
    public init(connectingTo address: TCPAddress, timeoutMillis: Int32 = 5000) throws(Errno) {
        let fd = try retryingInterrupts {
            socket(address.family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        }
        let owned = FileDescriptor(adopting: fd)
        let rc = try address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc < 0 {
            guard errno == EINPROGRESS else { throw Errno.current }
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            let ready = try Poll.waitReadable(&fds, timeoutMillis: timeoutMillis)
            guard ready > 0 else { throw .timedOut }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            if error != 0 { throw Errno(rawValue: error) }
        }
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        descriptor = owned
        setNoDelay()
    }

    /// TCP_NODELAY: small request frames must not wait for Nagle.
    public func setNoDelay() {
        var one: Int32 = 1
        setsockopt(descriptor.rawValue, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Receive and send timeouts (SO_RCVTIMEO / SO_SNDTIMEO); 0 = none.
    public func setTimeouts(receiveMillis: Int, sendMillis: Int) throws(Errno) {
        for (option, millis) in [(SO_RCVTIMEO, receiveMillis), (SO_SNDTIMEO, sendMillis)] {
            var value = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
            if setsockopt(descriptor.rawValue, SOL_SOCKET, option, &value, socklen_t(MemoryLayout<timeval>.size)) < 0 {
                throw Errno.current
            }
        }
    }

    /// Writes all of `buffer`.
    public func send(_ buffer: UnsafeRawBufferPointer) throws(Errno) {
        var done = 0
        while done < buffer.count {
            let n = try retryingInterrupts { Glibc.send(descriptor.rawValue, buffer.baseAddress! + done, buffer.count - done, Int32(MSG_NOSIGNAL)) }
            done += n
        }
    }

    /// Writes `first` then `second` with one `writev` where possible (header + page data).
    public func send(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(Errno) {
        guard second.count > 0 else { return try send(first) }
        var vectors = [iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count)]
        let total = first.count + second.count
        let n = try retryingInterrupts { vectors.withUnsafeMutableBufferPointer { writev(descriptor.rawValue, $0.baseAddress, 2) } }
        guard n < total else { return }
        if n < first.count {
            try send(UnsafeRawBufferPointer(rebasing: first[n...]))
            try send(second)
        } else {
            try send(UnsafeRawBufferPointer(rebasing: second[(n - first.count)...]))
        }
    }

    /// Reads exactly `buffer.count` bytes; EOF throws `ECONNRESET`.
    public func receiveExactly(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) {
        guard try receiveOrEOF(into: buffer) else { throw .connectionReset }
    }

    /// Like `receiveExactly`, but returns false on a clean EOF before the first byte.
    public func receiveOrEOF(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> Bool {
        var done = 0
        while done < buffer.count {
            let n = try retryingInterrupts { recv(descriptor.rawValue, buffer.baseAddress! + done, buffer.count - done, 0) }
            if n == 0 {
                if done == 0 { return false }
                throw .connectionReset
            }
            done += n
        }
        return true
    }

    /// Shuts both directions down (wakes a thread blocked in receive on this socket).
    public func shutdown() { _ = Glibc.shutdown(descriptor.rawValue, Int32(SHUT_RDWR)) }
}
