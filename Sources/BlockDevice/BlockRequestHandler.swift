import GuestMemory
import Logging
import RemoteMem
import Synchronization
import VhostUser
import Virtio

/// Serves virtio-blk requests of one queue against the device's page store. It parses each
/// request once (`BlockRequest.parse`), validates it, moves the data between guest buffers and
/// the store, and writes the status byte — all through `GuestMemoryWriter`, so migration
/// logging sees every guest write. Allocates nothing per request.
///
/// With a store that can keep reads in flight (memory servers), a READ that misses the cache
/// is left in flight (`start` returns nil) and completed by `completeFinished` when its pages
/// arrive, so the queue keeps serving while a server answers. Everything else, and any read
/// that cannot start without waiting, is served in `start` after the queue's own reads in
/// flight have finished (they may hold pages or window slots that request would wait for).
final class BlockRequestHandler: VirtqueueRequestHandler {
    private let device: MemxBlockDevice
    private let store: any PageStore
    private let capacityBytes: UInt64
    private let readOnly: Bool
    /// Reads in flight: nil for a store that completes everything at once.
    private let asyncStore: (any AsyncReadablePageStore)?
    private let signal: CompletionSignal?
    private let reads: [InFlightRead]
    private var freeReads: [Int] = []
    /// Slots fetching or finished, in start order.
    private var activeReads: [Int] = []

    init(device: MemxBlockDevice) {
        self.device = device
        store = device.store
        capacityBytes = device.configuration.capacityBytes
        readOnly = device.configuration.readOnly
        if let remote = device.store as? any AsyncReadablePageStore, let signal = try? CompletionSignal() {
            asyncStore = remote
            self.signal = signal
            reads = (0..<InFlightRead.slotsPerQueue).map { _ in InFlightRead(read: remote.makePendingRead(signal: signal)) }
            freeReads = Array((0..<InFlightRead.slotsPerQueue).reversed())
            freeReads.reserveCapacity(InFlightRead.slotsPerQueue)
            activeReads.reserveCapacity(InFlightRead.slotsPerQueue)
        } else {
            asyncStore = nil
            signal = nil
            reads = []
        }
    }

    func handle(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32 {
        switch parse(chain, writer: writer) {
        case .request(let request): serve(request, chain: chain, writer: writer)
        case .done(let usedLength): usedLength
        }
    }

    /// A parsed request, or the used length of one that could not be parsed (its status byte,
    /// if it has one, already says IOERR).
    private enum Parsed {
        case request(BlockRequest)
        case done(UInt32)
    }

    private func parse(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> Parsed {
        do {
            return .request(try BlockRequest.parse(chain, memory: writer.memory))
        } catch {
            switch error {
            case .noStatusByte:
                return .done(0)
            case .malformed(let statusAddress, _):
                try? writer.writeByte(statusAddress, BlockStatus.ioError.rawValue)
                return .done(1)
            }
        }
    }

    /// Executes a parsed request and writes its status byte; returns the used length.
    private func serve(_ request: BlockRequest, chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32 {
        complete(request, status: execute(request, chain: chain, writer: writer), writer: writer)
    }

    // MARK: - Reads in flight

    func start(_ chain: DescriptorChain, head: UInt16, writer: GuestMemoryWriter) -> UInt32? {
        guard let asyncStore else { return handle(chain, writer: writer) }
        let request: BlockRequest
        switch parse(chain, writer: writer) {
        case .request(let parsed): request = parsed
        case .done(let usedLength): return usedLength
        }
        // A read in flight needs a free slot; with none (the queue collects finished ones after
        // every batch, so only a deep queue gets here) the read is served blocking.
        if !freeReads.isEmpty, request.type == .read, request.dataLength > 0, let offset = dataRange(request) {
            let index = freeReads.removeLast()
            let slot = reads[index]
            if record(request, chain: chain, into: slot) {
                let started: ReadStart
                do {
                    started = try asyncStore.startRead(at: offset, length: Int(request.dataLength), slot.read)
                } catch {
                    freeReads.append(index)
                    reportStore("read", at: offset, error)
                    return complete(request, status: .ioError, writer: writer)
                }
                switch started {
                case .ready:
                    let status = copyToGuest(slot, asyncStore, writer: writer)
                    asyncStore.endRead(slot.read)
                    freeReads.append(index)
                    return complete(request, status: status, writer: writer)
                case .fetching:
                    slot.head = head
                    slot.offset = offset
                    slot.state = .fetching
                    activeReads.append(index)
                    return nil
                case .mustBlock:
                    break
                }
            }
            freeReads.append(index)
        }
        // Served here, possibly waiting: first finish our own reads in flight.
        if !activeReads.isEmpty { finishAll(writer: writer) }
        return serve(request, chain: chain, writer: writer)
    }

    var inFlightCount: Int { activeReads.count }

    var hasFinished: Bool { signal?.hasCompletions ?? false }

    var completionFD: CInt? { signal?.fileDescriptor }

    func armCompletion() -> Bool { signal?.arm() ?? true }

    func disarmCompletion() { signal?.disarm() }

    func completeFinished(writer: GuestMemoryWriter, waitForAll: Bool, _ complete: (UInt16, UInt32) -> Void) {
        signal?.take()
        asyncStore?.flushSubmissions()
        if waitForAll { finishAll(writer: writer) }
        var i = 0
        while i < activeReads.count {
            let index = activeReads[i]
            let slot = reads[index]
            if case .fetching = slot.state, asyncStore!.pollRead(slot.read) { finish(slot, writer: writer) }
            if case .finished(let usedLength) = slot.state {
                complete(slot.head, usedLength)
                slot.state = .free
                activeReads.remove(at: i)
                freeReads.append(index)
            } else {
                i += 1
            }
        }
    }

    /// Saves the guest data ranges and status byte of `request` in `slot`; false if it has
    /// more ranges than a slot holds.
    private func record(_ request: BlockRequest, chain: DescriptorChain, into slot: InFlightRead) -> Bool {
        slot.rangeCount = 0
        slot.length = request.dataLength
        slot.statusAddress = request.statusAddress
        var fits = true
        chain.forEachRange(writable: true, offset: request.dataOffset, length: request.dataLength) { (address, length) in
            guard slot.rangeCount < InFlightRead.rangesMax else {
                fits = false
                return
            }
            slot.addresses[slot.rangeCount] = address
            slot.lengths[slot.rangeCount] = length
            slot.rangeCount += 1
        }
        return fits
    }

    /// Copies a read's pages into the guest ranges saved in `slot`.
    private func copyToGuest(_ slot: InFlightRead, _ store: any AsyncReadablePageStore, writer: GuestMemoryWriter) -> BlockStatus {
        var position = 0
        do {
            for i in 0..<slot.rangeCount {
                try writer.fill(slot.addresses[i], length: slot.lengths[i]) { (buffer) throws(Never) in
                    store.copyOut(slot.read, at: position, into: buffer)
                    position += buffer.count
                }
            }
        } catch {
            return .ioError
        }
        return .ok
    }

    /// Completes a fetched read: data into the guest, status byte; the slot becomes finished.
    private func finish(_ slot: InFlightRead, writer: GuestMemoryWriter) {
        let store = asyncStore!
        var status = BlockStatus.ok
        do {
            try store.finishRead(slot.read)
            status = copyToGuest(slot, store, writer: writer)
            store.endRead(slot.read)
        } catch {
            reportStore("read", at: slot.offset, error)
            status = .ioError
        }
        var used: UInt32 = 0
        if (try? writer.writeByte(slot.statusAddress, status.rawValue)) != nil {
            used = status == .ok ? UInt32(slot.length) + 1 : 1
        }
        slot.state = .finished(usedLength: used)
    }

    /// Waits for and finishes every read still fetching (they stay listed until collected).
    private func finishAll(writer: GuestMemoryWriter) {
        asyncStore?.flushSubmissions()
        for index in activeReads {
            let slot = reads[index]
            guard case .fetching = slot.state else { continue }
            asyncStore!.waitRead(slot.read)
            finish(slot, writer: writer)
        }
    }

    /// Writes the status byte of a request completed at once and returns its used length.
    private func complete(_ request: BlockRequest, status: BlockStatus, writer: GuestMemoryWriter) -> UInt32 {
        do {
            try writer.writeByte(request.statusAddress, status.rawValue)
        } catch {
            return 0
        }
        return request.usedLength(status: status)
    }

    func queueStopped() {
        // Every request this queue popped has completed; make them durable before the
        // frontend hears the queue is idle.
        try? store.flush()
    }

    @inline(__always)
    private func execute(_ request: BlockRequest, chain: DescriptorChain, writer: GuestMemoryWriter) -> BlockStatus {
        guard let type = request.type else { return .unsupported }
        switch type {
        case .read:
            guard let offset = dataRange(request) else { return .ioError }
            return read(request, at: offset, chain: chain, writer: writer)
        case .write:
            guard !readOnly else { return .ioError }
            guard let offset = dataRange(request) else { return .ioError }
            return write(request, at: offset, chain: chain, memory: writer.memory)
        case .flush:
            do { try store.flush() } catch {
                reportStore("flush", at: 0, error)
                return .ioError
            }
            return .ok
        case .getID:
            return getID(request, chain: chain, writer: writer)
        case .discard, .writeZeroes:
            guard !readOnly else { return .ioError }
            return discard(request, chain: chain, memory: writer.memory)
        }
    }

    /// The byte offset of a read or write, if its sector range is whole sectors inside the disk.
    @inline(__always)
    private func dataRange(_ request: BlockRequest) -> UInt64? {
        let sectorBytes = BlockDeviceConfiguration.sectorBytes
        guard request.dataLength % sectorBytes == 0,
              request.sector <= capacityBytes / sectorBytes
        else { return nil }
        let offset = request.sector * sectorBytes
        guard request.dataLength <= capacityBytes - offset else { return nil }
        return offset
    }

    private func read(_ request: BlockRequest, at offset: UInt64, chain: DescriptorChain,
                      writer: GuestMemoryWriter) -> BlockStatus {
        var position = offset
        do {
            try chain.forEachRange(writable: true, offset: request.dataOffset, length: request.dataLength) {
                (address, length) throws(GuestMemoryAccessError<PageStoreError>) in
                try writer.fill(address, length: length) { (buffer) throws(PageStoreError) in
                    try store.read(at: position, into: buffer)
                    position += UInt64(buffer.count)
                }
            }
        } catch {
            report("read", at: offset, error)
            return .ioError
        }
        return .ok
    }

    private func write(_ request: BlockRequest, at offset: UInt64, chain: DescriptorChain,
                       memory: GuestMemoryMap) -> BlockStatus {
        var position = offset
        do {
            try chain.forEachRange(writable: false, offset: request.dataOffset, length: request.dataLength) {
                (address, length) throws(GuestMemoryAccessError<PageStoreError>) in
                try memory.withHostBuffers(address, length: length) { (buffer) throws(PageStoreError) in
                    try store.write(at: position, from: UnsafeRawBufferPointer(buffer))
                    position += UInt64(buffer.count)
                }
            }
        } catch {
            report("write", at: offset, error)
            return .ioError
        }
        return .ok
    }

    /// Logs a failed store operation: the first 10, then every 1000th (a dead server would
    /// otherwise log every request). Guest-memory errors are the guest's and are not logged.
    private func report(_ operation: String, at offset: UInt64, _ error: GuestMemoryAccessError<PageStoreError>) {
        guard case .body(let storeError) = error else { return }
        reportStore(operation, at: offset, storeError)
    }

    private func reportStore(_ operation: String, at offset: UInt64, _ error: PageStoreError) {
        let count = device.storeFailures.add(1, ordering: .relaxed).newValue
        if count <= 10 || count % 1000 == 0 {
            device.logger.error("\(operation) at byte \(offset) failed (\(count) store errors so far): \(error)")
        }
    }

    private func getID(_ request: BlockRequest, chain: DescriptorChain, writer: GuestMemoryWriter) -> BlockStatus {
        let count = min(UInt64(BlockDeviceConfiguration.serialBytesMax), request.dataLength)
        var copied = 0
        do {
            try chain.forEachRange(writable: true, offset: 0, length: count) {
                (address, length) throws(GuestMemoryError) in
                var failure: GuestMemoryError?
                device.serialBytes.withUnsafeBytes { serial in
                    do throws(GuestMemoryError) {
                        try writer.write(address, from: UnsafeRawBufferPointer(rebasing: serial[copied..<(copied + Int(length))]))
                    } catch {
                        failure = error
                    }
                }
                if let failure { throw failure }
                copied += Int(length)
            }
        } catch {
            return .ioError
        }
        return .ok
    }

    private func discard(_ request: BlockRequest, chain: DescriptorChain, memory: GuestMemoryMap) -> BlockStatus {
        let rangeBytes = DiscardRange.sizeBytes
        guard request.dataLength >= rangeBytes, request.dataLength % rangeBytes == 0,
              request.dataLength / rangeBytes <= UInt64(BlockDeviceConfiguration.discardSegmentsMax)
        else { return .ioError }
        let sectorBytes = BlockDeviceConfiguration.sectorBytes
        for index in 0..<(request.dataLength / rangeBytes) {
            let range: DiscardRange
            do {
                range = try DiscardRange.read(index, of: request, chain: chain, memory: memory)
            } catch {
                return .ioError
            }
            // QEMU's rules: DISCARD takes no flags; WRITE_ZEROES only UNMAP (we always unmap:
            // a hole reads as zeros and costs nothing).
            let allowedFlags: UInt32 = request.type == .discard ? 0 : DiscardRange.flagUnmap
            guard range.flags & ~allowedFlags == 0 else { return .unsupported }
            guard range.sectorCount <= BlockDeviceConfiguration.discardSectorsMax,
                  range.sector <= capacityBytes / sectorBytes,
                  UInt64(range.sectorCount) * sectorBytes <= capacityBytes - range.sector * sectorBytes
            else { return .ioError }
            do {
                try store.discard(at: range.sector * sectorBytes, length: UInt64(range.sectorCount) * sectorBytes)
            } catch {
                return .ioError
            }
        }
        return .ok
    }
}
