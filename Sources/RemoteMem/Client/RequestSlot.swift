/// One entry of a connection's in-flight window: the state of a request from submission until
/// its caller collects the reply. A connection preallocates `WireLimits.inFlightMax` of these, so
/// the data path allocates nothing per request.
///
/// Every field is guarded by the owning `ServerConnection`'s lock. The destination pointers are
/// the caller's (guest memory or cache frames); the receiver thread writes through them only
/// while `state == .receiving`, and the caller never returns before the state leaves
/// `.receiving`, so a late reply can never write into memory the caller has given back.
final class RequestSlot: @unchecked Sendable {
    // SAFETY: all mutable fields are accessed only with `ServerConnection.lock` held.
    enum State {
        /// Not in use; on the free list.
        case free
        /// Sent (or being sent); no reply yet.
        case waiting
        /// The receiver thread is reading the reply's payload into the destinations.
        case receiving
        /// Finished: `reply` or `error` is set.
        case done
    }

    /// The slot's index, also the low byte of every request id it carries.
    let index: Int
    /// Signalled when the slot reaches `.done` (its single waiter is the submitting caller).
    let completion = PosixCondition()
    /// Where a READ reply's pages go, one 4 KiB destination per page (allocated once).
    let destinations: UnsafeMutablePointer<UnsafeMutableRawPointer>

    var state: State = .free
    var requestID: UInt64 = 0
    var linkGeneration: UInt64 = 0
    var opcode: Opcode = .ping
    var pageCount: UInt32 = 0
    /// Destinations are registered (a READ); otherwise a payload is received into `payload`.
    var receivesPages = false
    var deadline = MonotonicInstant(nanoseconds: 0)
    var reply: FrameHeader?
    var payload: [UInt8] = []
    var error: RemoteMemError?
    /// Set for a request submitted without waiting: its outcome goes there and the slot is
    /// freed as soon as it is known (nobody calls `wait`).
    var asyncRequest: AsyncRequest?

    init(index: Int) {
        self.index = index
        destinations = .allocate(capacity: Int(WireLimits.pagesPerRequestMax))
    }

    deinit { destinations.deallocate() }

    /// Clears the per-request fields and marks the slot waiting for request `id`.
    func begin(id: UInt64, generation: UInt64, opcode: Opcode, pageCount: UInt32, deadline: MonotonicInstant) {
        state = .waiting
        requestID = id
        linkGeneration = generation
        self.opcode = opcode
        self.pageCount = pageCount
        self.deadline = deadline
        receivesPages = false
        asyncRequest = nil
        reply = nil
        error = nil
        if !payload.isEmpty { payload = [] }
    }

    /// Completes the slot with `error` unless it already has one (a timeout set first wins).
    /// Returns true if the slot is now free again (an asynchronous request, whose owner was told).
    @discardableResult
    func fail(_ error: RemoteMemError) -> Bool {
        if self.error == nil { self.error = error }
        return finish()
    }

    /// Marks the slot done: wakes its waiter, or hands an asynchronous request its outcome and
    /// returns true (the caller must put the slot back on the free list).
    func finish() -> Bool {
        if let request = asyncRequest {
            request.finish(status: error == nil ? reply?.status : nil, error: error)
            asyncRequest = nil
            state = .free
            payload = []
            return true
        }
        state = .done
        completion.signal()
        return false
    }
}

/// A submitted request, redeemed exactly once with `ServerConnection.wait`.
public struct RequestTicket: Sendable {
    let slot: Int
    let requestID: UInt64
}

/// A reply as the client received it: the header (status, handle, epoch) and, for control
/// requests, the payload.
public struct ServerReply: Sendable {
    public var header: FrameHeader
    public var payload: [UInt8]

    public var status: WireStatus? { header.statusValue }
}
