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

/// Limits of the de-duplication index (`FrameIndex`), each with its reason.
public enum DedupLimits {
    /// Frames with the page's hash compared byte by byte before the page is stored on its own:
    /// with a 128-bit keyed hash two different pages share a hash only by a (vanishingly rare)
    /// accident, so one compare is the norm; the cap bounds what a flood of colliding pages
    /// could cost a write.
    public static let candidatesComparedMax = 8
}
