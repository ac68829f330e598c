import GuestMemory
import LinuxSystem
import Logging
import Virtio

/// The per-request loop of one vring, confined to its data thread: pop, load the chain, hand it
/// to the device, add the used element, and publish in batches with interrupt suppression.
/// Allocates nothing per request: the chain storage and batch list are made once.
struct QueueRunner {
    /// Used elements published per `used->idx` update at most (one interrupt decision each).
    static let batchMax = 32

    private(set) var queue: SplitQueue?
    private let start: VringStart
    private let handler: any VirtqueueRequestHandler
    private var writer: GuestMemoryWriter
    private var call: EventNotifier?
    private var chain = DescriptorChain()
    private var batch: [UInt16] = []
    private var inflightCounter: UInt64 = 1
    private var resubmit: [UInt16] = []
    /// Set when the driver broke the ring; the queue then serves nothing until restarted
    /// (VIRTIO 1.2 §2.1.2 "device needs reset").
    private(set) var broken = false
    /// Malformed chains returned so far (they are logged sparingly).
    private var malformedChains = 0

    init(start: VringStart, handler: any VirtqueueRequestHandler) throws(VirtqueueError) {
        self.start = start
        self.handler = handler
        writer = GuestMemoryWriter(memory: start.memory, log: start.log)
        call = start.call
        var queue = try SplitQueue(layout: start.layout, memory: start.memory, nextAvail: start.base,
                                   eventIndex: start.eventIndex)
        if let inflight = start.inflight {
            let recovery = inflight.recover(guestUsedIndex: queue.guestUsedIndex, base: start.base)
            resubmit = recovery.resubmit
            inflightCounter = recovery.nextCounter
            queue.setNextAvail(recovery.nextAvail)
        }
        self.queue = queue
        batch.reserveCapacity(Int(start.layout.size))
    }

    /// Switches to a new memory snapshot / dirty log / call fd between batches.
    mutating func apply(memory: GuestMemoryMap, log: DirtyLog?, call: EventNotifier?) throws(VirtqueueError) {
        defer { writer = GuestMemoryWriter(memory: memory, log: log) }
        self.call = call
        if memory !== writer.memory {
            queue = try queue?.rebuilt(memory: memory)
        }
    }

    /// Serves requests left in flight by a previous backend process (inflight tracking).
    mutating func resubmitInflight(logger: Logger) {
        guard !resubmit.isEmpty else { return }
        logger.info("queue \(start.index): resubmitting \(resubmit.count) in-flight requests")
        let heads = resubmit
        resubmit = []
        for head in heads { serve(head: head, logger: logger) }
        flush()
    }

    /// Drains the avail ring until it stays empty after re-enabling notifications. With a
    /// polling window, an empty ring is watched for up to `pollNanos` before notifications are
    /// re-enabled: a driver that submits again within the window needs no kick and the thread
    /// no wake-up (QEMU's adaptive polling, `poll-max-ns`, defaults to 32 µs for the same reason).
    ///
    /// `controlPending` is asked after every batch; when it says yes the method returns at once
    /// (notifications stay off) so the thread can apply a stop or a new memory table.
    mutating func processAvailable(logger: Logger, pollNanos: UInt64 = 0, controlPending: () -> Bool = { false }) {
        guard queue != nil else { return }
        while true {
            queue!.disableNotifications()
            while true {
                let head: UInt16?
                do {
                    head = try queue!.popAvailable()
                } catch {
                    logger.error("queue \(start.index): driver error, queue stopped until reset: \(error)")
                    broken = true
                    start.error?.signal()
                    flush()
                    return
                }
                guard let head else { break }
                if let inflight = start.inflight {
                    inflight.markSubmitted(head, counter: inflightCounter)
                    inflightCounter &+= 1
                }
                serve(head: head, logger: logger)
                if batch.count >= Self.batchMax {
                    completeFinished()
                    flush()
                    if controlPending() { return }
                }
            }
            completeFinished()
            flush()
            if controlPending() { return }
            if handler.inFlightCount > 0 {
                // Requests in flight: no busy-polling. Their replies need the receiver and
                // server threads, which a spinning queue thread would keep off a small
                // machine's CPUs; the thread sleeps on the kick and the completion fd instead.
                if handler.hasFinished { continue }
            } else if pollNanos > 0, queue!.pollAvailable(nanoseconds: pollNanos) {
                continue
            }
            if !queue!.enableNotifications() { return }
        }
    }

    /// Publishes the requests the handler finished (out of order, as they complete).
    mutating func completeFinished(waitForAll: Bool = false) {
        guard handler.inFlightCount > 0 else { return }
        handler.completeFinished(writer: writer, waitForAll: waitForAll) { head, length in
            queue!.addUsed(head: head, length: length, writer: writer)
            batch.append(head)
        }
    }

    /// Completes and publishes every request in flight (before a control change or a stop).
    mutating func drainInFlight() {
        guard handler.inFlightCount > 0, queue != nil else { return }
        completeFinished(waitForAll: true)
        flush()
    }

    /// Handles one request and adds its used element (published by the next `flush`).
    private mutating func serve(head: UInt16, logger: Logger) {
        var length: UInt32 = 0
        do {
            try chain.load(head: head, table: queue!.descriptorTable, queueSize: start.layout.size,
                           memory: writer.memory)
            guard let done = handler.start(chain, head: head, writer: writer) else { return }  // in flight
            length = done
        } catch {
            // The chain is unusable: no status byte can be trusted. Give the buffers back
            // with length 0 so the driver is not left waiting, and say why — the first few
            // times, then every 1000th, so a hostile guest cannot flood the log.
            malformedChains += 1
            if malformedChains <= 10 || malformedChains % 1000 == 0 {
                logger.warning("queue \(start.index): malformed descriptor chain at head \(head) (\(malformedChains) so far): \(error)")
            }
        }
        queue!.addUsed(head: head, length: length, writer: writer)
        batch.append(head)
    }

    /// Publishes the batch (inflight bookkeeping in spec order) and interrupts if wanted.
    private mutating func flush() {
        guard !batch.isEmpty, queue != nil else { return }
        if let inflight = start.inflight {
            var previous: UInt16?
            for head in batch {
                inflight.linkIntoBatch(head, previous: previous)
                previous = head
            }
            inflight.setLastBatchHead(batch[batch.count - 1])
        }
        let notify = queue!.publishUsed(writer: writer)
        if let inflight = start.inflight {
            for head in batch { inflight.markCompleted(head) }
            inflight.setUsedIndex(queue!.nextUsed)
        }
        batch.removeAll(keepingCapacity: true)
        if notify { call?.signal() }
    }
}
