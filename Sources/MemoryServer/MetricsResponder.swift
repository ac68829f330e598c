import Glibc
import LinuxSystem
import Logging
import RemoteMem
import Synchronization

/// memx-server's `--metrics-listen`: a `MetricsEndpoint` answering `exposition(server)`.
public final class MetricsResponder: Sendable {
    private let endpoint: MetricsEndpoint

    /// The address actually bound.
    public var address: TCPAddress { endpoint.address }

    public init(listen: TCPAddress, server: MemoryServer, logger: Logger) throws(MemoryServerError) {
        do {
            endpoint = try MetricsEndpoint(listen: listen) { Self.exposition(server) }
        } catch {
            throw .system("cannot listen for metrics on \(listen)", error)
        }
    }

    /// Starts the responder's thread. Call once.
    public func start() throws(MemoryServerError) {
        do { try endpoint.start() } catch { throw .system("cannot start the metrics thread", error) }
    }

    /// Stops answering and joins the thread. Idempotent.
    public func stop() { endpoint.stop() }

    /// The server's numbers in the Prometheus text format.
    public static func exposition(_ server: MemoryServer) -> String {
        let arena = server.store.arena
        let counters = server.counters
        var text = PrometheusText()
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: UInt64)]) {
            text.metric(name, type, help, samples)
        }
        let frameBytes = UInt64(PageArena.frameBytes)
        metric("memx_server_capacity_bytes", "gauge", "Memory this server lends at most.",
               [("", UInt64(arena.capacityFrames) * frameBytes)])
        metric("memx_server_used_bytes", "gauge", "Memory holding pages now.", [("", UInt64(arena.usedFrames) * frameBytes)])
        metric("memx_server_frames_capacity", "gauge", "4 KiB frames this server lends at most.",
               [("", UInt64(arena.capacityFrames))])
        metric("memx_server_frames_used", "gauge", "4 KiB frames holding pages now.", [("", UInt64(arena.usedFrames))])
        metric("memx_server_volumes", "gauge", "Volumes held.", [("", UInt64(server.store.volumeCount))])
        metric("memx_server_connections", "gauge", "Open client connections.", [("", UInt64(counters.connectionsOpen))])
        let byOpcode = ServerCounters.allOpcodes.map { (labels: "{opcode=\"\($0)\"}", value: counters.requests(for: $0)) }
            + [(labels: "{opcode=\"unknown\"}", value: counters.requests(for: nil))]
        metric("memx_server_requests_total", "counter", "Requests answered, by opcode.", byOpcode)
        metric("memx_server_received_bytes_total", "counter", "Request bytes received, headers included.",
               [("", counters.bytesReceived)])
        metric("memx_server_sent_bytes_total", "counter", "Reply bytes sent, headers included.", [("", counters.bytesSent)])
        metric("memx_server_auth_failures_total", "counter", "AUTH requests refused (another key, or a replayed proof).",
               [("", counters.authenticationFailures)])
        let dedup = server.store.dedupStatistics()
        metric("memx_server_logical_bytes", "gauge", "What the volumes' written pages would cost without de-duplication.",
               [("", dedup.logicalPages * frameBytes)])
        metric("memx_server_dedup_saved_bytes", "gauge", "Logical bytes minus used bytes: what de-duplication saves now.",
               [("", dedup.savedFrames * frameBytes)])
        metric("memx_server_dedup_distinct_frames", "gauge", "Frames of de-duplicating volumes (distinct contents).",
               [("", dedup.indexedFrames)])
        metric("memx_server_dedup_shared_frames", "gauge", "Frames two or more pages point at.", [("", dedup.sharedFrames)])
        metric("memx_server_dedup_private_pages", "gauge", "Pages of volumes created without de-duplication.",
               [("", dedup.privatePages)])
        metric("memx_server_dedup_pages_hashed_total", "counter", "Pages hashed on their way in.", [("", dedup.pagesHashed)])
        metric("memx_server_dedup_duplicate_pages_total", "counter", "Pages written whose content was stored already.",
               [("", dedup.duplicatePages)])
        metric("memx_server_dedup_hash_collisions_total", "counter", "Hash matches whose bytes differed (caught by the compare).",
               [("", dedup.hashCollisions)])
        metric("memx_server_dedup_copies_on_write_total", "counter", "Writes that moved a page off a shared frame.",
               [("", dedup.copiesOnWrite)])
        metric("memx_server_dedup_cloned_pages_total", "counter", "Pages given to clones (VOLUME_CLONE).", [("", dedup.clonedPages)])
        return text.text
    }
}
