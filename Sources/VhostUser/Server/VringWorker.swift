import Glibc
import GuestMemory
import LinuxSystem
import Logging
import Synchronization
import Virtio

/// The data thread of one vring: waits for kicks, pops requests, hands each to the device's
/// handler, returns them through the used ring in batches, and signals the call eventfd when
/// the driver wants an interrupt.
///
/// Its ring state lives on its own thread. The control thread reaches it only through
/// `WorkerControl` (a mutex-guarded mailbox plus a wake-up eventfd): new memory maps and
/// dirty logs, call-fd swaps, enable/disable, and stop.
public final class VringWorker: Sendable {
    public let index: Int
    private let control: Mutex<WorkerControl>
    private let wake: EventNotifier
    /// The newest control generation posted; the data thread checks it between batches so a
    /// guest that never stops submitting cannot hold off a stop or a memory-table change.
    private let postedGeneration = Atomic<UInt64>(0)
    /// The control generation the thread has applied; the control thread waits on it.
    private let appliedGeneration = Atomic<UInt64>(0)
    /// The avail index the thread stopped at (valid after `stop` returns).
    private let finalAvail = Atomic<UInt32>(0)
    private let stopped = Atomic<Bool>(false)
    private let thread: Mutex<OSThread?> = Mutex(nil)

    struct WorkerControl: Sendable {
        var generation: UInt64 = 0
        var memory: GuestMemoryMap
        var log: DirtyLog?
        var call: EventNotifier?
        var enabled: Bool
        var stopRequested = false
    }

    /// Starts the thread for `start`; `handler` is used only on that thread. `pollMicroseconds`
    /// is the busy-poll window after the ring runs empty (0 = sleep at once).
    public init(start: VringStart, handler: any VirtqueueRequestHandler, pollMicroseconds: Int = 0,
                logger: Logger) throws(Errno) {
        index = start.index
        wake = try EventNotifier()
        control = Mutex(WorkerControl(memory: start.memory, log: start.log, call: start.call, enabled: start.enabled))
        let box = UncheckedHandler(handler)
        let thread = try OSThread(name: "memx-vq\(start.index)") { [self] in
            self.run(start: start, handler: box.handler, pollNanos: UInt64(max(0, pollMicroseconds)) * 1000,
                     logger: logger)
        }
        self.thread.withLock { $0 = thread }
    }

    /// Hands `update` to the thread and waits until it has applied it (so, e.g., QEMU may free
    /// an old dirty log once we reply).
    func update(_ update: (inout WorkerControl) -> Void) {
        let target = control.withLock { state -> UInt64 in
            update(&state)
            state.generation += 1
            return state.generation
        }
        postedGeneration.store(target, ordering: .releasing)
        wake.signal()
        while appliedGeneration.load(ordering: .acquiring) < target, !stopped.load(ordering: .acquiring) {
            usleep(20)
        }
    }

    public func publish(memory: GuestMemoryMap, log: DirtyLog?) {
        update { $0.memory = memory; $0.log = log }
    }

    public func setCall(_ call: EventNotifier?) {
        update { $0.call = call }
    }

    public func setEnabled(_ enabled: Bool) {
        update { $0.enabled = enabled }
    }

    /// Stops the thread after it has completed every request it popped, and returns the next
    /// avail index (the GET_VRING_BASE answer).
    public func stop() -> UInt16 {
        let target = control.withLock { state -> UInt64 in
            state.stopRequested = true
            state.generation += 1
            return state.generation
        }
        postedGeneration.store(target, ordering: .releasing)
        wake.signal()
        let thread = self.thread.withLock { $0 }
        thread?.join()
        return UInt16(truncatingIfNeeded: finalAvail.load(ordering: .acquiring))
    }

    // MARK: - The data thread

    private func run(start: VringStart, handler: any VirtqueueRequestHandler, pollNanos: UInt64, logger: Logger) {
        var runner: QueueRunner
        do {
            runner = try QueueRunner(start: start, handler: handler)
        } catch {
            logger.error("queue \(index): cannot start: \(error)")
            finalAvail.store(UInt32(start.base), ordering: .releasing)
            stopped.store(true, ordering: .releasing)
            return
        }
        var appliedGen: UInt64 = 0
        var enabled = start.enabled
        let kickFD = start.kick?.rawValue ?? -1
        var fds = [Poll.readable(wake.rawValue)]
        if kickFD >= 0 { fds.append(Poll.readable(kickFD)) }
        // Readable when a request the handler left in flight finishes (while armed).
        if let completionFD = handler.completionFD { fds.append(Poll.readable(completionFD)) }
        // With no kick fd (SET_VRING_KICK's "no fd" flag) the ring is polled every millisecond.
        let timeout: Int32 = kickFD >= 0 ? -1 : 1
        var currentCall = start.call
        while true {
            let state = control.withLock { $0 }
            if state.generation != appliedGen {
                // Requests in flight finish under the memory map and call fd they started with.
                runner.drainInFlight()
                if state.stopRequested { break }
                do {
                    try runner.apply(memory: state.memory, log: state.log, call: state.call)
                } catch {
                    logger.error("queue \(index): the new memory map does not hold the ring: \(error)")
                }
                if state.call !== currentCall {
                    // A completion may have been published while the frontend swapped the fd:
                    // always notify a new call fd once (yc-libvhost does the same).
                    state.call?.signal()
                    currentCall = state.call
                }
                enabled = state.enabled
                appliedGen = state.generation
                appliedGeneration.store(appliedGen, ordering: .releasing)
            }
            if enabled && !runner.broken {
                // Requests a crashed predecessor left in flight go first (once), then the ring.
                runner.resubmitInflight(logger: logger)
                runner.processAvailable(logger: logger, pollNanos: pollNanos) {
                    postedGeneration.load(ordering: .acquiring) != appliedGen
                }
            } else {
                runner.drainInFlight()
            }
            let waitingForCompletions = handler.inFlightCount > 0
            if waitingForCompletions && !handler.armCompletion() { continue }  // finished meanwhile
            do {
                _ = try Poll.waitReadable(&fds, timeoutMillis: timeout)
            } catch {
                logger.error("queue \(index): poll failed: \(error)")
                break
            }
            if waitingForCompletions { handler.disarmCompletion() }
            wake.drain()
            if kickFD >= 0 { _ = start.kick?.drain() }
        }
        runner.drainInFlight()
        handler.queueStopped()
        finalAvail.store(UInt32(runner.queue?.nextAvail ?? start.base), ordering: .releasing)
        stopped.store(true, ordering: .releasing)
    }
}

/// Moves a handler (used by exactly one thread) into that thread's closure.
private struct UncheckedHandler: @unchecked Sendable {
    // SAFETY: the handler is created by the control thread and from then on used only by the
    // data thread it is handed to.
    let handler: any VirtqueueRequestHandler
    init(_ handler: any VirtqueueRequestHandler) { self.handler = handler }
}
