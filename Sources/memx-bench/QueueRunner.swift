import VhostUser

/// The time windows of one workload, shared by every queue that runs it. Completions before
/// `measureStart` are warm-up, and completions from `measureEnd` on are not counted.
struct RunSchedule: Sendable {
    let measureStart: ContinuousClock.Instant
    let measureEnd: ContinuousClock.Instant

    var measureSeconds: Double { (measureEnd - measureStart).inSeconds }
}

extension Duration {
    /// The duration as fractional seconds.
    var inSeconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

/// What one queue measured for one workload.
struct QueueResult: Sendable {
    var histogram = LatencyHistogram()
    /// Requests completed inside the measurement window.
    var ios = 0
    /// Reads whose used length differed from data + status byte (a spec nit, not a failure).
    var usedLengthMismatches = 0
    var kicks = 0
    var submitted = 0

    mutating func merge(_ other: QueueResult) {
        histogram.merge(other.histogram)
        ios += other.ios
        usedLengthMismatches += other.usedLengthMismatches
        kicks += other.kicks
        submitted += other.submitted
    }
}

/// Runs one workload on one queue: it keeps `queueDepth` requests in flight until the
/// schedule ends, then drains them.
///
/// Per request it reads the clock twice and records one histogram sample, and it allocates
/// nothing. Submission goes through slots whose buffers were carved at start-up. Writes send
/// whatever the slot's buffer holds, because content does not matter for timing and
/// verification was done beforehand.
enum QueueRunner {
    static func run(queue: BlockQueueClient, queueCount: Int, workload: Workload, regionBytes: UInt64, seed: UInt64,
                    schedule: RunSchedule, requestTimeout: Duration) throws(BenchError) -> QueueResult {
        let depth = min(workload.queueDepth, queue.slotCount)
        let requestBytes = workload.requestBytes
        let isRead = workload.isRead
        // Sequential queues start at evenly spaced points so they do not read the same blocks.
        let stagger = regionBytes / UInt64(max(1, queueCount)) * UInt64(queue.index)
        var offsets = OffsetSequence(workload: workload, regionBytes: regionBytes, start: stagger)
        var generator = SeededGenerator(seed: seed, stream: RandomStream.workload &+ UInt64(queue.index))
        var submittedAt = [ContinuousClock.Instant](repeating: schedule.measureStart, count: queue.slotCount)
        var slotOffsets = [UInt64](repeating: 0, count: queue.slotCount)
        var result = QueueResult()
        var failure: BlockCompletion?
        var failureOffset: UInt64 = 0
        let kicksBefore = queue.kickCount
        let submittedBefore = queue.submittedCount

        func submitOne() throws(FrontendError) {
            let offset = offsets.next(&generator)
            let operation: BlockOperation = isRead
                ? .read(sector: offset / 512, byteCount: requestBytes)
                : .write(sector: offset / 512, byteCount: requestBytes)
            let now = ContinuousClock.now
            let slot = try queue.submit(operation, kick: false)
            submittedAt[slot] = now
            slotOffsets[slot] = offset
        }

        do throws(FrontendError) {
            for _ in 0..<depth { try submitOne() }
            queue.kickIfNeeded()
            while true {
                var completed = 0
                try queue.waitForCompletions(minimum: 1, timeout: requestTimeout) { completion in
                    let now = ContinuousClock.now
                    completed += 1
                    if !completion.isOK, failure == nil {
                        failure = completion
                        failureOffset = slotOffsets[completion.slot]
                    }
                    if isRead, completion.usedLength != completion.expectedUsedLength {
                        result.usedLengthMismatches += 1
                    }
                    if now >= schedule.measureStart, now < schedule.measureEnd {
                        result.histogram.record(nanoseconds(now - submittedAt[completion.slot]))
                        result.ios += 1
                    }
                }
                if failure != nil || ContinuousClock.now >= schedule.measureEnd { break }
                for _ in 0..<completed { try submitOne() }
                queue.kickIfNeeded()
            }
            while queue.outstanding > 0 {
                try queue.waitForCompletions(minimum: 1, timeout: requestTimeout) { _ in }
            }
        } catch {
            throw .frontend(error, during: "\(workload) on queue \(queue.index)")
        }
        if let failure {
            throw .requestFailed("\(workload): \(isRead ? "read" : "write") of \(requestBytes) bytes at "
                + "0x\(String(failureOffset, radix: 16)) completed with status \(failure.statusByte)")
        }
        result.kicks = queue.kickCount - kicksBefore
        result.submitted = queue.submittedCount - submittedBefore
        return result
    }

    @inline(__always)
    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
    }
}

/// Hands one queue's run to its own thread. The spawning thread reads `result` only after
/// `join()`.
final class QueueJob: @unchecked Sendable {
    // SAFETY: a job is given to exactly one OSThread. The spawning thread does not touch
    // `queue` from `start` until `join()` returns, and only then reads `result`, so the
    // non-Sendable queue client is never used by two threads at once.
    let queue: BlockQueueClient
    let queueCount: Int
    let workload: Workload
    let regionBytes: UInt64
    let seed: UInt64
    let schedule: RunSchedule
    let requestTimeout: Duration
    var result: Result<QueueResult, BenchError>?

    init(queue: BlockQueueClient, queueCount: Int, workload: Workload, regionBytes: UInt64, seed: UInt64,
         schedule: RunSchedule, requestTimeout: Duration) {
        self.queue = queue
        self.queueCount = queueCount
        self.workload = workload
        self.regionBytes = regionBytes
        self.seed = seed
        self.schedule = schedule
        self.requestTimeout = requestTimeout
    }

    func run() {
        result = Result { () throws(BenchError) in
            try QueueRunner.run(queue: queue, queueCount: queueCount, workload: workload, regionBytes: regionBytes,
                                seed: seed, schedule: schedule, requestTimeout: requestTimeout)
        }
    }
}
