import LinuxSystem
import Synchronization

/// Tells one data thread that requests it submitted without waiting have completed: the
/// receiver threads call `complete()`, the data thread arms the signal before it sleeps and
/// polls `notifier` with its kick fd. A data thread that is busy (or busy-polling) is not
/// woken at all: the eventfd is written only when the thread armed it, so a completion costs
/// one atomic add while the queue is under load.
public final class CompletionSignal: Sendable {
    public let notifier: EventNotifier
    private let completions = Atomic<Int>(0)
    private let armed = Atomic<Bool>(false)

    /// The eventfd to poll.
    public var fileDescriptor: CInt { notifier.rawValue }

    public init() throws(Errno) {
        notifier = try EventNotifier()
    }

    /// A request completed (called by receiver threads).
    @inline(__always)
    public func complete() {
        completions.add(1, ordering: .sequentiallyConsistent)
        if armed.exchange(false, ordering: .sequentiallyConsistent) { notifier.signal() }
    }

    /// True if any request completed since the last `take()`.
    @inline(__always)
    public var hasCompletions: Bool { completions.load(ordering: .acquiring) > 0 }

    /// Resets the completion count before the data thread looks at its requests.
    @inline(__always)
    public func take() {
        completions.store(0, ordering: .sequentiallyConsistent)
    }

    /// Arms the wake-up before the data thread sleeps. Returns false if a completion arrived
    /// meanwhile (the thread must look again instead of sleeping). A completion that comes
    /// after this sees `armed` and writes the eventfd: none is lost.
    public func arm() -> Bool {
        armed.store(true, ordering: .sequentiallyConsistent)
        if completions.load(ordering: .sequentiallyConsistent) > 0 {
            armed.store(false, ordering: .sequentiallyConsistent)
            return false
        }
        return true
    }

    /// Disarms after waking (and drains the eventfd).
    public func disarm() {
        armed.store(false, ordering: .sequentiallyConsistent)
        notifier.drain()
    }
}
