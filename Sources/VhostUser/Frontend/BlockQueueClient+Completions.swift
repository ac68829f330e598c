import GuestMemory
import LinuxSystem
import Virtio

extension BlockQueueClient {
    /// Spins between deadline checks while polling the used ring. Reading the clock costs
    /// about 40 ns, so checking every 256 spins keeps the overhead negligible. A stalled
    /// backend is still noticed within microseconds of the deadline.
    static let spinsPerDeadlineCheck = 256
    /// The offset by which `used_event` is kept ahead while polling: half the index space.
    /// `vring_need_event` then never fires for a batch smaller than 32768.
    static let pollingUsedEventLead: UInt16 = 0x8000
    /// How long a notification may trail the used-index update it belongs to before we call
    /// it missed. The backend writes the eventfd right after publishing `used->idx`.
    static let lateNotificationGrace: Duration = .milliseconds(50)

    /// Takes every completion already in the used ring, without waiting, and hands each to
    /// `body`. Returns how many there were. The slot is already free when `body` runs.
    @discardableResult
    public func reapCompletions(_ body: (BlockCompletion) -> Void) throws(FrontendError) -> Int {
        var count = 0
        while let (head, length) = driver.popUsed() {
            if completionWait == .pollUsedRing && eventIndex {
                // popUsed re-armed `used_event` at lastUsed; push it back out of reach.
                availRing.storeU16(4 + 2 * Int(queueSize), driver.lastUsed &+ Self.pollingUsedEventLead)
            }
            body(try complete(head: head, usedLength: length))
            count += 1
        }
        return count
    }

    /// Waits until at least `minimum` completions have been reaped (each handed to `body`), or
    /// throws `completionTimeout` after `timeout` (default `options.requestTimeout`).
    ///
    /// With `.callNotifier` it sleeps on the call eventfd. It checks the used ring before each
    /// sleep, after a full fence, so a completion that raced with arming the interrupt is not
    /// missed. If the wait times out while the used ring did move, the backend completed
    /// without notifying, and that throws `missedNotification` instead.
    @discardableResult
    public func waitForCompletions(minimum: Int = 1, timeout: Duration? = nil,
                                   _ body: (BlockCompletion) -> Void) throws(FrontendError) -> Int {
        guard minimum <= outstanding else {
            throw .invalidState("waiting for \(minimum) completions with \(outstanding) request(s) outstanding")
        }
        let limit = timeout ?? options.requestTimeout
        let deadline = ContinuousClock.now.advanced(by: limit)
        var reaped = try reapCompletions(body)
        switch completionWait {
        case .pollUsedRing:
            var spins = 0
            while reaped < minimum {
                spins += 1
                if driver.deviceUsedIndex == driver.lastUsed {
                    if spins % Self.spinsPerDeadlineCheck == 0, ContinuousClock.now >= deadline {
                        throw timeoutError(limit)
                    }
                    continue
                }
                reaped += try reapCompletions(body)
            }
        case .callNotifier:
            while reaped < minimum {
                RingMemory.fullFence()
                if driver.deviceUsedIndex != driver.lastUsed {
                    reaped += try reapCompletions(body)
                    continue
                }
                let remaining = deadline - ContinuousClock.now
                if remaining > .zero, try sleepOnCall(remaining) {
                    reaped += try reapCompletions(body)
                    continue
                }
                if ContinuousClock.now < deadline { continue }  // EINTR: sleep again
                // The deadline passed without a notification. If the ring moved anyway, give a
                // signal that raced with the timeout a short grace before calling it missed.
                let used = driver.deviceUsedIndex
                guard used != driver.lastUsed else { throw timeoutError(limit) }
                guard try sleepOnCall(Self.lateNotificationGrace) else {
                    throw .missedNotification(queue: index, usedIndex: used, lastSeen: driver.lastUsed)
                }
                reaped += try reapCompletions(body)
            }
        }
        return reaped
    }

    /// Submits one request, waits for it, and returns its completion. Nothing else may be in
    /// flight on the queue, or its completion would be consumed here.
    public func perform(_ operation: BlockOperation, data: [UInt8]? = nil,
                        timeout: Duration? = nil) throws(FrontendError) -> BlockCompletion {
        guard outstanding == 0 else {
            throw .invalidState("perform() with \(outstanding) request(s) already in flight")
        }
        try submit(operation, data: data)
        var result: BlockCompletion?
        try waitForCompletions(minimum: 1, timeout: timeout) { result = $0 }
        return result!
    }

    /// Reads `byteCount` bytes at `sector` and returns the completion and the data. The data is
    /// returned even if the status is not OK, so a test can see what the device wrote.
    public func read(sector: UInt64, byteCount: Int,
                     timeout: Duration? = nil) throws(FrontendError) -> (BlockCompletion, [UInt8]) {
        let completion = try perform(.read(sector: sector, byteCount: byteCount), timeout: timeout)
        return (completion, try readData(slot: completion.slot, count: byteCount))
    }

    /// Writes `data` at `sector` and returns the completion.
    public func write(sector: UInt64, data: [UInt8],
                      timeout: Duration? = nil) throws(FrontendError) -> BlockCompletion {
        try perform(.write(sector: sector, byteCount: data.count), data: data, timeout: timeout)
    }

    /// Sends GET_ID and returns the serial: the 20 ID bytes, cut at the first NUL.
    public func deviceID(timeout: Duration? = nil) throws(FrontendError) -> (BlockCompletion, [UInt8]) {
        let completion = try perform(.getID, timeout: timeout)
        let bytes = try readData(slot: completion.slot, count: BlockOperation.idBytes)
        return (completion, Array(bytes.prefix { $0 != 0 }))
    }

    /// Sleeps on the call eventfd for at most `remaining`. Returns true if it fired, after
    /// draining it.
    private func sleepOnCall(_ remaining: Duration) throws(FrontendError) -> Bool {
        var fds = [Poll.readable(call.rawValue)]
        let millis = Int32(clamping: max(1, remaining.millisecondsRoundedUp))
        let ready: Int
        do {
            ready = try Poll.waitReadable(&fds, timeoutMillis: millis)
        } catch {
            throw .socket(operation: "poll on the call eventfd of queue \(index)", errno: error)
        }
        guard ready > 0 else { return false }
        call.drain()
        noteNotification()
        return true
    }

    private func timeoutError(_ limit: Duration) -> FrontendError {
        .completionTimeout(queue: index, outstanding: outstanding, milliseconds: Int(limit.millisecondsRoundedUp))
    }
}
