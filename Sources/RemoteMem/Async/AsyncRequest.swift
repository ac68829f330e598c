import Synchronization

/// One request submitted without waiting (`ServerConnection.submitAsync`): the caller owns and
/// reuses it; the connection fills in the outcome, frees its window slot at once (so a caller
/// holding many of these can never starve the window) and calls `signal.complete()`.
///
/// Publication: the connection writes `status`/`error` and then stores `finished` with release
/// ordering under its lock; the owner reads them only after an acquiring load of `finished`
/// returns true.
public final class AsyncRequest: @unchecked Sendable {
    // SAFETY: `status` and `error` are written by the connection before `finished` is set and
    // read by the owner only after it observed `finished` (acquire/release); `signal` is
    // immutable.
    let signal: CompletionSignal
    private let finishedFlag = Atomic<Bool>(true)
    /// The reply's raw status, or nil if the request failed without one (`error`).
    private(set) var status: UInt16?
    private(set) var error: RemoteMemError?
    /// The request's connection index in the owner's list and server (set by the submitter).
    var connection = 0

    public init(signal: CompletionSignal) {
        self.signal = signal
    }

    /// True once the reply arrived or the request failed.
    @inline(__always)
    public var isFinished: Bool { finishedFlag.load(ordering: .acquiring) }

    /// Marks the request in flight (by its submitter, before sending).
    func begin() {
        status = nil
        error = nil
        finishedFlag.store(false, ordering: .releasing)
    }

    /// Records the outcome and wakes the owner (by the connection).
    func finish(status: UInt16?, error: RemoteMemError?) {
        self.status = status
        self.error = error
        finishedFlag.store(true, ordering: .releasing)
        signal.complete()
    }
}
