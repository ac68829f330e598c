import Synchronization

/// A volume's server connections and their volume handles, by slot index. Slots are only ever
/// appended: a server that is re-admitted after a failure gets a fresh connection in a new
/// slot, and its old slot stays (retired) for the volume's life. So an index a request was
/// planned with always names the connection it was planned for, and the data path reads slots
/// without a lock.
///
/// Storage is allocated once at `capacity`; `append` writes the slot, then publishes the new
/// count with release ordering, and readers reach a slot only through an index below a count
/// they loaded with acquire ordering (or learned under a lock taken after the append).
public final class ConnectionSlots: RandomAccessCollection, @unchecked Sendable {
    // SAFETY: slot `i` is written once, before `count` exceeds `i`, and never again until
    // `deinit`; `handles[i]` likewise. `append` is called by one thread at a time (the
    // volume's repair thread, or `open` before any other thread exists).

    public let capacity: Int
    private let connections: UnsafeMutablePointer<ServerConnection>
    /// The volume handle each slot's server gave at `VOLUME_OPEN`.
    let handles: UnsafeMutablePointer<UInt32>
    private let published = Atomic<Int>(0)

    init(capacity: Int) {
        self.capacity = capacity
        connections = .allocate(capacity: capacity)
        handles = .allocate(capacity: capacity)
    }

    deinit {
        connections.deinitialize(count: published.load(ordering: .acquiring))
        connections.deallocate()
        handles.deallocate()
    }

    /// Adds a slot; returns its index, or nil if every slot is used.
    @discardableResult
    func append(_ connection: ServerConnection, handle: UInt32) -> Int? {
        let index = published.load(ordering: .relaxed)
        guard index < capacity else { return nil }
        (connections + index).initialize(to: connection)
        handles[index] = handle
        published.store(index + 1, ordering: .releasing)
        return index
    }

    public var startIndex: Int { 0 }
    public var endIndex: Int { published.load(ordering: .acquiring) }

    public subscript(_ index: Int) -> ServerConnection {
        precondition(index >= 0 && index < endIndex, "connection slot \(index) out of range")
        return connections[index]
    }
}
