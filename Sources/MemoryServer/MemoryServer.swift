import Glibc
import LinuxSystem
import Logging
import RemoteMem
import Synchronization

/// A memory server: lends a bounded arena of RAM as 4 KiB pages of named volumes to clients
/// speaking the MemX wire protocol over TCP (docs/PROTOCOL.md; design/MEMX.md §2).
///
/// One thread accepts; each connection gets its own thread, so a slow or stuck client only ever
/// stalls itself. `stop()` ends it all cleanly: the listener and every connection socket are
/// shut down (which wakes their threads) and every thread is joined.
///
/// What it does not know: placement, replication and caching are the client's (memx-vhost);
/// this server only stores pages, enforces leases, and reports its numbers.
public final class MemoryServer: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): `listener` is immutable after init and only used through
    // thread-safe system calls (accept, shutdown); every mutable field is behind a Mutex.
    /// The address actually bound (port 0 in the configuration is replaced by the kernel's pick).
    public let address: TCPAddress
    public let store: VolumeStore
    public let counters: ServerCounters
    public let handler: RequestHandler
    private let listener: TCPListener
    /// The UDP side, on the TCP port's number, when started with `transport: .udp`.
    private let datagrams: DatagramListener?
    private let logger: Logger
    private let connections = Mutex(ConnectionTable())
    private let acceptThread = Mutex<OSThread?>(nil)
    /// The pause after a failed `accept` (out of descriptors, say) before trying again.
    private static let acceptRetryMillis: Int32 = 10

    /// The threads of live connections and of finished ones not joined yet.
    private struct ConnectionTable {
        var stopping = false
        var nextID = 1
        /// Connection id → its socket (to shut it down on stop) and thread (set once started).
        var live: [Int: (socket: SharedConnection, thread: OSThread?)] = [:]
        var finished: [OSThread] = []
    }

    /// Binds `listen` and sets up an arena of `memoryBytes`; `start()` begins serving. With a
    /// `clusterKey`, clients must prove it (AUTH) before anything but HELLO is served.
    /// With `transport: .udp` the server also serves UDP on the same port number (TCP stays
    /// on: memxctl and TCP clients use it).
    public init(listen: TCPAddress, memoryBytes: UInt64, clusterKey: ClusterKey? = nil, hasher: PageHasher = .random(),
                transport: Transport = .tcp, logger: Logger) throws(MemoryServerError) {
        let arena = try PageArena(capacityBytes: memoryBytes)
        store = try VolumeStore(arena: arena, hasher: hasher)
        counters = ServerCounters()
        var random = SystemRandomNumberGenerator()
        handler = RequestHandler(store: store, counters: counters,
                                 serverID: (0..<RequestHandler.identityBytes).map { _ in UInt8.random(in: 0...255, using: &random) },
                                 clusterKey: clusterKey)
        do {
            listener = try TCPListener(address: listen)
        } catch {
            throw .system("cannot listen on \(listen)", error)
        }
        address = TCPAddress(host: listen.host, port: listener.port)
        self.logger = logger
        if transport == .udp {
            do {
                datagrams = try DatagramListener(address: address, handler: handler, counters: counters, logger: logger)
            } catch {
                throw .system("cannot listen on UDP \(address)", error)
            }
        } else {
            datagrams = nil
        }
    }

    /// The bound port.
    public var port: UInt16 { address.port }

    /// Starts the accept thread. Call once.
    public func start() throws(MemoryServerError) {
        let thread: OSThread
        do {
            thread = try OSThread(name: "memx-accept") { [self] in acceptLoop() }
        } catch {
            throw .system("cannot start the accept thread", error)
        }
        acceptThread.withLock { $0 = thread }
        do {
            try datagrams?.start()
        } catch {
            throw .system("cannot start the UDP thread", error)
        }
    }

    /// UDP requests answered again from a reply cache (duplicates not applied twice).
    public var duplicatesAnswered: UInt64 { datagrams?.duplicatesAnswered.load(ordering: .relaxed) ?? 0 }

    /// Stops serving: no new connections, every connection closed, every thread joined.
    /// Idempotent (call it from one thread at a time); returns when all threads have ended.
    public func stop() {
        connections.withLock { table in
            table.stopping = true
            // The table holds a reference to each socket, so none is closed (and its number
            // reused) before it is shut down here.
            for (_, entry) in table.live { entry.socket.connection.shutdown() }
        }
        listener.shutdown()
        datagrams?.stop()
        acceptThread.withLock { $0 }?.join()
        let threads = connections.withLock { table in
            let threads = table.live.values.compactMap(\.thread) + table.finished
            table.finished = []
            return threads
        }
        for thread in threads { thread.join() }
    }

    // MARK: - Accepting

    private func acceptLoop() {
        while true {
            let connection: TCPConnection
            do {
                connection = try listener.accept()
            } catch {
                if connections.withLock({ $0.stopping }) { return }
                // EMFILE, ENOBUFS, ECONNABORTED: log, pause briefly, keep accepting.
                logger.warning("accept failed: \(error)")
                var nothing: [pollfd] = []
                _ = try? Poll.waitReadable(&nothing, timeoutMillis: Self.acceptRetryMillis)
                continue
            }
            joinFinished()
            let peer = connection.peerAddress.map(String.init(describing:)) ?? "unknown peer"
            let socket = SharedConnection(connection)
            let admitted: Int? = connections.withLock { table in
                guard !table.stopping, table.live.count < MemoryServerLimits.connectionsMax else { return nil }
                let id = table.nextID
                table.nextID += 1
                table.live[id] = (socket, nil)
                return id
            }
            guard let id = admitted else {
                if connections.withLock({ $0.stopping }) { return }
                logger.warning("connection from \(peer) refused: \(MemoryServerLimits.connectionsMax) connections already open")
                continue
            }
            startConnection(id: id, socket: socket, peer: peer)
        }
    }

    /// Starts the thread that serves connection `id` (which now owns `socket`).
    private func startConnection(id: Int, socket: SharedConnection, peer: String) {
        var sessionLogger = logger
        sessionLogger[metadataKey: "peer"] = .string(peer)
        counters.connectionOpened()
        sessionLogger.debug("connection open")
        let thread: OSThread
        do {
            thread = try OSThread(name: "memx-conn-\(id)") { [self, sessionLogger] in
                // The session (and its buffers) is built on, and confined to, its own thread.
                do {
                    let session = try ClientSession(handler: handler, logger: sessionLogger, peer: peer)
                    session.serve(socket.connection)
                } catch {
                    sessionLogger.error("connection dropped: cannot map its buffers: \(error)")
                }
                counters.connectionClosed()
                unregister(id)
            }
        } catch {
            logger.error("connection from \(peer) dropped: cannot start its thread: \(error)")
            counters.connectionClosed()
            unregister(id)
            return
        }
        connections.withLock { table in
            if table.live[id] != nil {
                table.live[id]?.thread = thread
            } else {
                table.finished.append(thread)  // it already ended
            }
        }
    }

    /// Removes connection `id` from the table; its thread, if known, waits to be joined.
    private func unregister(_ id: Int) {
        connections.withLock { table in
            if let entry = table.live.removeValue(forKey: id), let thread = entry.thread { table.finished.append(thread) }
        }
    }

    /// Joins the threads of connections that ended (each exits right after unregistering).
    private func joinFinished() {
        let threads = connections.withLock { table in
            let threads = table.finished
            table.finished = []
            return threads
        }
        for thread in threads { thread.join() }
    }
}

/// A connection socket shared by its thread and the server's table; closed when both are done
/// with it, so `stop()` can always shut it down safely.
final class SharedConnection: @unchecked Sendable {
    // SAFETY (@unchecked Sendable): the descriptor never changes; the connection's thread is
    // its only reader and writer, and other threads only call `shutdown`, which the kernel
    // makes safe against concurrent I/O.
    let connection: TCPConnection
    init(_ connection: consuming TCPConnection) { self.connection = connection }
}
