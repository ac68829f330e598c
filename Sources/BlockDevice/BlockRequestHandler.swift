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
final class BlockRequestHandler: VirtqueueRequestHandler {
    private let device: MemxBlockDevice
    private let store: any PageStore
    private let capacityBytes: UInt64
    private let readOnly: Bool

    init(device: MemxBlockDevice) {
        self.device = device
        store = device.store
        capacityBytes = device.configuration.capacityBytes
        readOnly = device.configuration.readOnly
    }

    func handle(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32 {
        let request: BlockRequest
        do {
            request = try BlockRequest.parse(chain, memory: writer.memory)
        } catch {
            switch error {
            case .noStatusByte:
                return 0
            case .malformed(let statusAddress, _):
                try? writer.writeByte(statusAddress, BlockStatus.ioError.rawValue)
                return 1
            }
        }
        let status = execute(request, chain: chain, writer: writer)
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
