import LinuxSystem

/// The shared inflight-tracking buffer the backend allocated in answer to GET_INFLIGHT_FD
/// (vhost-user spec, "Inflight I/O tracking"). The frontend keeps it and hands it back with
/// SET_INFLIGHT_FD on every start.
///
/// It outlives the `FrontendClient` that obtained it. A reconnect test passes the same buffer
/// to the next client's `start(resuming:inflight:)`, as QEMU does after a backend crash, and
/// the new backend process finds the requests that were in flight. The frontend never
/// interprets the contents. `snapshot()` copies them out so tests can inspect the
/// per-descriptor `inflight` flags.
public final class InflightBuffer: Sendable {
    /// What GET_INFLIGHT_FD returned: the size and offset of the mapping, and the queue count
    /// and size it covers.
    public let area: InflightArea
    /// The memfd (or other shareable fd) that backs the buffer.
    public let file: SharedFileDescriptor
    private let mapping: MemoryMapping

    /// Maps `area.mmapSize` bytes of `fd` at `area.mmapOffset`. Throws if the backend gave a
    /// size or offset that cannot be mapped.
    public init(area: InflightArea, fd: consuming FileDescriptor) throws(FrontendError) {
        guard area.mmapSize > 0, area.mmapSize <= 1 << 32, area.mmapOffset % 4096 == 0 else {
            throw .badReplyPayload(request: "GET_INFLIGHT_FD", size: Int(truncatingIfNeeded: area.mmapSize),
                                   expected: "a mappable size (1 B – 4 GiB) at a page-aligned offset")
        }
        do {
            mapping = try MemoryMapping(fd: fd.rawValue, length: Int(area.mmapSize), offset: Int(area.mmapOffset))
        } catch {
            throw .socket(operation: "mmap of the inflight buffer", errno: error)
        }
        self.area = area
        self.file = SharedFileDescriptor(fd)
    }

    /// A copy of the buffer's current bytes.
    public func snapshot() -> [UInt8] {
        // SAFETY: `mapping.bytes` covers exactly the mapped length, and the mapping lives as
        // long as `self`.
        Array(UnsafeRawBufferPointer(mapping.bytes))
    }
}
