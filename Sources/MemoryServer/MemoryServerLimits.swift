/// The server's own limits (the wire's are in `WireLimits`), each with its reason.
public enum MemoryServerLimits {
    /// Connections served at once: one thread and about 1.1 MiB of buffer address space each
    /// (committed as used). One backend host holds a few per server, so this is plenty; a
    /// connection past it is closed at once with a log line.
    public static let connectionsMax = 1024
    /// A peer that has not finished its HELLO this long after connecting is dropped, so idle
    /// sockets cannot hold connection slots.
    public static let handshakeTimeoutMillis = 10_000
    /// A peer that does not read its replies for this long is dropped (its thread would
    /// otherwise block in `send` forever).
    public static let sendTimeoutMillis = 30_000
}
