import GuestMemory
import RemoteMem

/// A guest READ the queue thread started and has not completed yet: where its bytes go (the
/// guest data ranges, saved because the descriptor chain is gone by completion time), its
/// status byte, and the store's read in flight. A queue's handler makes `slotsPerQueue` of
/// these once, so keeping reads in flight allocates nothing.
final class InFlightRead {
    /// Reads one queue keeps in flight at most (a guest at QD32 on one queue, with room).
    static let slotsPerQueue = 64
    /// Guest data ranges one in-flight read records; a read with more is served blocking.
    static let rangesMax = 32

    enum State {
        case free
        /// The store is fetching.
        case fetching
        /// Completed (data copied, status written), waiting to be handed to the queue.
        case finished(usedLength: UInt32)
    }

    let read: PendingRead
    var state = State.free
    var head: UInt16 = 0
    var offset: UInt64 = 0
    var length: UInt64 = 0
    var statusAddress = GuestAddress(0)
    var rangeCount = 0
    let addresses: UnsafeMutablePointer<GuestAddress>
    let lengths: UnsafeMutablePointer<UInt64>

    init(read: PendingRead) {
        self.read = read
        addresses = .allocate(capacity: Self.rangesMax)
        lengths = .allocate(capacity: Self.rangesMax)
    }

    deinit {
        addresses.deallocate()
        lengths.deallocate()
    }
}
