import CMemxShims
import Glibc

/// A peer's socket address as `recvfrom` reports it: the key of a datagram session on the
/// server (docs/PROTOCOL.md, "UDP transport"). Compared byte for byte.
public struct DatagramPeer: Hashable, Sendable, CustomStringConvertible {
    var storage = sockaddr_storage()
    var length = socklen_t(0)

    public init() {}

    public static func == (lhs: DatagramPeer, rhs: DatagramPeer) -> Bool {
        guard lhs.length == rhs.length else { return false }
        return withUnsafeBytes(of: lhs.storage) { a in
            withUnsafeBytes(of: rhs.storage) { b in memcmp(a.baseAddress!, b.baseAddress!, Int(lhs.length)) == 0 }
        }
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: storage) { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0[..<Int(length)])) }
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        return withUnsafeBytes(of: storage) { raw -> String in
            if Int32(storage.ss_family) == AF_INET6 {
                let address = raw.load(as: sockaddr_in6.self)
                var ip = address.sin6_addr
                inet_ntop(AF_INET6, &ip, &text, socklen_t(text.count))
                return "[\(String(cString: text))]:\(UInt16(bigEndian: address.sin6_port))"
            }
            let address = raw.load(as: sockaddr_in.self)
            var ip = address.sin_addr
            inet_ntop(AF_INET, &ip, &text, socklen_t(text.count))
            return "\(String(cString: text)):\(UInt16(bigEndian: address.sin_port))"
        }
    }
}

/// A UDP socket: bound (a server, or the test proxy) or connected (a client, which then sends
/// and receives only to and from its server). Shared by the threads that send on it and the one
/// that receives; `shutdown` wakes a blocked receiver (it then gets `ESHUTDOWN`-like EOF, 0
/// bytes) and the descriptor closes when the last reference goes.
public final class UDPSocket: Sendable {
    // SAFETY (Sendable): the descriptor never changes; send/recv/shutdown are thread-safe
    // system calls, and the socket is closed only in deinit, when nobody can use it.
    public let rawValue: CInt
    /// The bound local port.
    public let port: UInt16

    /// A socket bound to `address` (port 0: the kernel picks).
    public init(binding address: TCPAddress) throws(Errno) {
        let fd = try retryingInterrupts { socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let rc = try address.withSockaddr { bind(fd, $0, $1) }
        if rc < 0 {
            let error = Errno.current
            close(fd)
            throw error
        }
        rawValue = fd
        port = Self.localPort(fd)
        Self.growBuffers(fd)
    }

    /// A socket connected to `address` (datagrams from anyone else are dropped by the kernel).
    public init(connectingTo address: TCPAddress) throws(Errno) {
        let fd = try retryingInterrupts { socket(address.family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let rc = try address.withSockaddr { Glibc.connect(fd, $0, $1) }
        if rc < 0 {
            let error = Errno.current
            close(fd)
            throw error
        }
        rawValue = fd
        port = Self.localPort(fd)
        Self.growBuffers(fd)
    }

    deinit { close(rawValue) }

    /// Receive timeout (SO_RCVTIMEO); 0 = none. A receive that times out throws `.wouldBlock`.
    public func setReceiveTimeout(millis: Int) throws(Errno) {
        var value = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
        if setsockopt(rawValue, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size)) < 0 {
            throw Errno.current
        }
    }

    /// Sends one datagram made of `first` then `second` (connected sockets).
    public func send(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) throws(Errno) {
        try send(first, second, to: nil)
    }

    /// Sends one datagram made of `first` then `second`, to `peer` (nil: the connected peer).
    public func send(_ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer, to peer: DatagramPeer?) throws(Errno) {
        var vectors = (iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress), iov_len: first.count),
                       iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress), iov_len: second.count))
        var target = peer ?? DatagramPeer()
        let sent = withUnsafeMutablePointer(to: &vectors) { vectorPointer in
            withUnsafeMutablePointer(to: &target.storage) { address in
                var message = msghdr()
                message.msg_iov = UnsafeMutableRawPointer(vectorPointer).assumingMemoryBound(to: iovec.self)
                message.msg_iovlen = second.count > 0 ? 2 : 1
                if peer != nil {
                    message.msg_name = UnsafeMutableRawPointer(address)
                    message.msg_namelen = target.length
                }
                // SAFETY: the iovecs and address live for the duration of the call.
                return retryingSend { sendmsg(rawValue, &message, Int32(MSG_NOSIGNAL)) }
            }
        }
        // A full socket buffer drops the datagram, as the network would: the protocol retransmits.
        if sent < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED { throw Errno.current }
    }

    /// Receives one datagram into `buffer` (truncated to it); returns its length and sender.
    /// 0 bytes with the socket shut down means stop.
    public func receive(into buffer: UnsafeMutableRawBufferPointer) throws(Errno) -> (Int, DatagramPeer) {
        var peer = DatagramPeer()
        peer.length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let n = withUnsafeMutablePointer(to: &peer.storage) { storage in
                storage.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    recvfrom(rawValue, buffer.baseAddress, buffer.count, 0, $0, &peer.length)
                }
            }
            if n >= 0 { return (n, peer) }
            // A connected socket reports an earlier ICMP "port unreachable" as ECONNREFUSED:
            // the caller decides (a handshake gives up, a receiver goes on).
            if errno == EINTR { continue }
            throw Errno.current
        }
    }

    /// Wakes a blocked receiver and stops further I/O.
    public func shutdown() { _ = Glibc.shutdown(rawValue, Int32(SHUT_RDWR)) }

    private func retryingSend(_ call: () -> Int) -> Int {
        while true {
            let n = call()
            if n >= 0 || errno != EINTR { return n }
        }
    }

    private static func localPort(_ fd: CInt) -> UInt16 {
        var bound = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return withUnsafeBytes(of: bound) { raw in
            Int32(bound.ss_family) == AF_INET6 ? UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
                                              : UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
        }
    }

    /// 4 MiB socket buffers (the kernel caps them at net.core.*mem_max): a window of page
    /// datagrams must not overflow the receive queue on a burst.
    private static func growBuffers(_ fd: CInt) {
        var bytes: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, socklen_t(MemoryLayout<Int32>.size))
    }
}
