/// Limits and defaults of the remote-memory client, each with its reason.
public enum ClientLimits {
    /// A request with no reply after this long fails and resets its connection: long enough
    /// for a loaded server, short enough that a guest sees an error rather than a hang.
    public static let requestTimeoutMillisDefault = 2000
    /// Connect plus HELLO; a server that takes longer is treated as down.
    public static let connectTimeoutMillisDefault = 2000
    /// The first reconnect attempt after a connection breaks.
    public static let reconnectBackoffMillisMin = 100
    /// Reconnect attempts back off exponentially up to this.
    public static let reconnectBackoffMillisMax = 5000
    /// Pages per placement group: 4 MiB, so the group table stays a few bytes per 4 MiB.
    public static let groupPages: UInt64 = 1024
    /// Servers one pool may name (a group-table entry is one byte per replica; 0xFF = none).
    public static let serversMax = 254
    /// Connection slots one volume can use in its life: the servers given, plus one per
    /// re-admission of a server that failed and came back. When they run out, a server that
    /// comes back stays out until memx-vhost restarts (logged).
    public static let connectionSlotsMax = 1024
    /// Replicas per group stored in the table (only the first is used until replication lands).
    public static let replicasPerGroup = 1
    /// Concurrent requests one volume call submits before waiting for them: a read or write of
    /// up to `PageCacheLimits.batchPagesMax` pages, one request per page at worst.
    public static let requestsPerCallMax = 256
    /// Volume-open rounds to agree on one epoch across servers before giving up (another
    /// backend racing us for the lease).
    public static let epochAgreementRoundsMax = 8
    /// Group-table writes retried after a CONFLICT before giving up.
    public static let metadataConflictRetriesMax = 4
    /// How often a volume asks its servers whether one is draining.
    public static let drainPollMillis = 1000
    /// How stale a server's SERVER_STAT may be when placing a new group.
    public static let serverStatMaxAgeMillis = 1000
}
