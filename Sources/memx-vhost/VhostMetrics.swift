import BlockDevice
import LinuxSystem
import RemoteMem

/// memx-vhost's numbers for `--metrics-listen`: I/O errors, the store's memory and, on memory
/// servers, the page cache, the servers it stopped using or is draining, and re-replication.
enum VhostMetrics {
    static func exposition(device: MemxBlockDevice) -> String {
        let store = device.store
        var text = PrometheusText()
        text.metric("memx_vhost_store_errors_total", "counter", "Page-store operations that failed (each an IOERR to the guest).",
                    UInt64(device.storeFailureCount))
        text.metric("memx_vhost_resident_bytes", "gauge", "Memory the store holds on this host (the pool file, or the cache).",
                    store.residentBytes)
        if let leased = device.leased {
            let now: String
            switch leased.current {
            case .standby: now = "standby"
            case .active: now = "active"
            case .handedOff: now = "handed_off"
            case .fenced: now = "fenced"
            }
            text.metric("memx_vhost_volume_state", "gauge", "Where the volume's lease is, for this backend (1 for the current state).",
                        ["standby", "active", "handed_off", "fenced"].map { (labels: "{state=\"\($0)\"}", value: UInt64($0 == now ? 1 : 0)) })
        }
        guard let remote = store as? RemotePageStore else { return text.text }
        let cache = remote.cache.statistics
        text.metric("memx_vhost_cache_hits_total", "counter", "Pages found in the page cache.", cache.hits)
        text.metric("memx_vhost_cache_misses_total", "counter", "Pages fetched from the memory servers.", cache.misses)
        text.metric("memx_vhost_cache_evictions_total", "counter", "Clean pages dropped to make room.", cache.evictions)
        text.metric("memx_vhost_cache_writeback_pages_total", "counter", "Dirty pages written back to the servers.", cache.writeBackPages)
        text.metric("memx_vhost_cache_dirty_pages", "gauge", "Pages in the cache the servers do not have yet.", UInt64(cache.dirtyPages))
        let volume = remote.volume
        let up = volume.upServers.count
        text.metric("memx_vhost_servers", "gauge", "Memory servers given to this backend, by state.", [
            (labels: "{state=\"up\"}", value: UInt64(up)),
            (labels: "{state=\"down\"}", value: UInt64(volume.pool.count - up)),
        ])
        text.metric("memx_vhost_servers_readmitted_total", "counter", "Servers taken back after a failure (each starts untrusted).",
                    UInt64(volume.repairProgress.serversReadmitted))
        let repair = volume.repairProgress
        text.metric("memx_vhost_rereplicated_groups_total", "counter", "Page groups copied to a new server after one was lost or drained.",
                    UInt64(repair.groupsRepaired))
        text.metric("memx_vhost_rereplicated_bytes_total", "counter", "Bytes copied by re-replication.", repair.bytesCopied)
        text.metric("memx_vhost_groups_under_replicated", "gauge", "Page groups with fewer copies than --replicas and nowhere to copy.",
                    UInt64(repair.groupsUnderReplicated))
        text.metric("memx_vhost_groups_lost", "gauge", "Page groups whose every copy is on a server that is down.", UInt64(repair.groupsLost))
        text.metric("memx_vhost_replicas", "gauge", "Copies of every page group (--replicas).", UInt64(volume.replicaCount))
        return text.text
    }
}
