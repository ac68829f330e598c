import VhostUser
import Virtio

/// The work done on queue 0 before any timed run. Prefill writes the whole measured region, so
/// that reads on both backends return real data and not holes. Verification writes known
/// patterns to a sample of blocks, reads them back, and fails loudly on any difference.
struct DataPreparation {
    /// Requests prefill keeps in flight.
    static let prefillDepthMax = 32
    /// Blocks read to decide whether an earlier run with this seed already prefilled the
    /// region (`--prefill auto`).
    static let prefillCheckBlocks = 64

    let queue: BlockQueueClient
    let regionBytes: UInt64
    let seed: UInt64
    let flushSupported: Bool
    let filler: [UInt8]

    init(queue: BlockQueueClient, regionBytes: UInt64, seed: UInt64, flushSupported: Bool) {
        self.queue = queue
        self.regionBytes = regionBytes
        self.seed = seed
        self.flushSupported = flushSupported
        filler = DataPattern.sharedFiller(seed: seed)
    }

    private var blockCount: UInt64 { regionBytes / UInt64(DataPattern.blockBytes) }

    /// True if every sampled block already holds this seed's prefill pattern.
    func prefillIsPresent() throws(BenchError) -> Bool {
        var generator = SeededGenerator(seed: seed, stream: RandomStream.prefillCheck)
        for _ in 0..<Self.prefillCheckBlocks {
            let offset = generator.next(upperBound: blockCount) * UInt64(DataPattern.blockBytes)
            let data = try read(offset, count: DataPattern.blockBytes, during: "checking for an earlier prefill")
            let expected = DataPattern.expected(diskOffset: offset, count: data.count, seed: seed,
                                                generation: DataPattern.prefillGeneration, filler: filler)
            if data != expected { return false }
        }
        return true
    }

    /// Writes the prefill pattern over the whole region, in chunks the size of a slot's data
    /// buffer, keeping up to `prefillDepthMax` writes in flight. Returns the time taken.
    func prefill() throws(BenchError) -> Duration {
        let slotBlocks = Int(queue.area.dataBytesPerSlot) / DataPattern.blockBytes
        let chunk = min(slotBlocks * DataPattern.blockBytes, Int(regionBytes))
        let depth = min(Self.prefillDepthMax, queue.slotCount)
        let tag = DataPattern.tag(seed: seed, generation: DataPattern.prefillGeneration)
        var template = [UInt8]()
        template.reserveCapacity(chunk)
        while template.count < chunk { template.append(contentsOf: filler) }
        let started = ContinuousClock.now
        var offset: UInt64 = 0
        var failed: BlockCompletion?
        do throws(FrontendError) {
            while failed == nil && (offset < regionBytes || queue.outstanding > 0) {
                while queue.outstanding < depth && offset < regionBytes {
                    let count = Int(min(UInt64(chunk), regionBytes - offset))
                    for block in stride(from: 0, to: count, by: DataPattern.blockBytes) {
                        DataPattern.stamp(&template, at: block, diskOffset: offset + UInt64(block), tag: tag)
                    }
                    let slot = try queue.reserveSlot()
                    try queue.writeData(slot: slot, count == chunk ? template : Array(template.prefix(count)))
                    try queue.submit(.write(sector: offset / 512, byteCount: count), in: slot, kick: false)
                    offset += UInt64(count)
                }
                queue.kickIfNeeded()
                try queue.waitForCompletions(minimum: 1) { if !$0.isOK, failed == nil { failed = $0 } }
            }
        } catch {
            throw .frontend(error, during: "prefill")
        }
        if let failed { throw .requestFailed("prefill write completed with status \(failed.statusByte)") }
        return ContinuousClock.now - started
    }

    /// Writes the verification pattern to a sample of the region and reads it back, then does
    /// the same with the prefill pattern, so the region is left as prefill left it. The sample
    /// is `sampleBlocks` random blocks, the first and last block, and one extent of
    /// `extentBytes` that crosses block boundaries. Ends with a FLUSH when the backend supports
    /// it. Returns the number of extents checked.
    func verify(sampleBlocks: Int, extentBytes: Int) throws(BenchError) -> Int {
        var generator = SeededGenerator(seed: seed, stream: RandomStream.verification)
        let block = UInt64(DataPattern.blockBytes)
        var extents: [(offset: UInt64, count: Int)] = [
            (0, DataPattern.blockBytes), (regionBytes - block, DataPattern.blockBytes),
        ]
        let extent = min(UInt64(extentBytes) / block * block, regionBytes)
        let extentStarts = (regionBytes - extent) / block + 1
        extents.append((generator.next(upperBound: extentStarts) * block, Int(extent)))
        for _ in 0..<sampleBlocks {
            extents.append((generator.next(upperBound: blockCount) * block, DataPattern.blockBytes))
        }
        for generation in [DataPattern.verifyGeneration, DataPattern.prefillGeneration] {
            for (offset, count) in extents {
                let expected = DataPattern.expected(diskOffset: offset, count: count, seed: seed, generation: generation,
                                                    filler: filler)
                try write(offset, expected, during: "verification write")
                let actual = try read(offset, count: count, during: "verification read")
                if let difference = DataPattern.difference(expected: expected, actual: actual, diskOffset: offset,
                                                           seed: seed) {
                    throw .dataMismatch("after writing \(count) bytes at disk offset 0x\(String(offset, radix: 16)) "
                        + "(generation \(generation)) and reading them back: \(difference)")
                }
            }
        }
        if flushSupported {
            let completion: BlockCompletion
            do {
                completion = try queue.perform(.flush)
            } catch {
                throw .frontend(error, during: "verification flush")
            }
            guard completion.isOK else { throw .requestFailed("FLUSH completed with status \(completion.statusByte)") }
        }
        return extents.count
    }

    private func write(_ offset: UInt64, _ data: [UInt8], during: String) throws(BenchError) {
        let completion: BlockCompletion
        do {
            completion = try queue.write(sector: offset / 512, data: data)
        } catch {
            throw .frontend(error, during: during)
        }
        guard completion.isOK else {
            throw .requestFailed(
                "write of \(data.count) bytes at 0x\(String(offset, radix: 16)) → status \(completion.statusByte)")
        }
    }

    private func read(_ offset: UInt64, count: Int, during: String) throws(BenchError) -> [UInt8] {
        let completion: BlockCompletion
        let data: [UInt8]
        do {
            (completion, data) = try queue.read(sector: offset / 512, byteCount: count)
        } catch {
            throw .frontend(error, during: during)
        }
        guard completion.isOK else {
            throw .requestFailed(
                "read of \(count) bytes at 0x\(String(offset, radix: 16)) → status \(completion.statusByte)")
        }
        return data
    }
}
