import Benchmark
import BlockDevice
import GuestMemory
import Glibc
import LinuxSystem
import Logging
import RemoteMem
import VhostUser
import Virtio

// The data path of memx-vhost in one process: a real queue thread (`VringWorker`) serving a
// fake guest's ring through `MemxBlockDevice` on the embedded pool. Each iteration makes one
// request available, kicks, and spins until it completes. malloc-interposer counts every heap
// allocation in the process (both threads), so mallocCountTotal / iterations is the number of
// allocations per request.

/// A guest with one queue of 128 and `slots` fixed 3-descriptor chains, re-published forever.
final class Rig: @unchecked Sendable {
    // SAFETY: used by one benchmark thread at a time; the worker only sees Sendable state.
    static let queueSize: UInt16 = 128
    let memory: GuestMemoryMap
    var driver: SplitQueueDriver
    let worker: VringWorker
    let kick: EventNotifier
    let store: SharedMemoryPageStore
    var heads: [UInt16]
    let volume: String

    init(requestType: BlockRequestType, bytes: UInt32, slots: Int, allocatingControl: Bool = false) throws {
        let region = try GuestMemoryRegion(anonymousAt: GuestAddress(0), size: 64 << 20)
        let memory = try GuestMemoryMap(regions: [region])
        self.memory = memory
        let layout = SplitQueueDriver.layout(size: Self.queueSize, base: GuestAddress(0x10000))
        var driver = try SplitQueueDriver(layout: layout, memory: memory, eventIndex: true)
        let volume = "bench-\(getpid())-\(requestType)-\(bytes)"
        self.volume = volume
        let store = try SharedMemoryPageStore(volume: volume, capacityBytes: 256 << 20)
        self.store = store
        let device = MemxBlockDevice(
            configuration: BlockDeviceConfiguration(capacityBytes: 256 << 20, queueCount: 1, readOnly: false, serial: "bench"),
            store: store)
        let kick = try EventNotifier()
        self.kick = kick
        var heads: [UInt16] = []
        var data: UInt64 = 0x100000
        for slot in 0..<slots {
            let header = GuestAddress(0x80000 + UInt64(slot) * 32)
            var raw = (requestType.rawValue.littleEndian, UInt32(0), (UInt64(slot) * 8 % (200 << 11)).littleEndian)
            try withUnsafeBytes(of: &raw) { try memory.write(header, from: $0) }
            let head = driver.addChain([
                ChainSegment(address: header.rawValue, length: 16, isWritable: false),
                ChainSegment(address: data, length: bytes, isWritable: requestType == .read),
                ChainSegment(address: header.rawValue + 16, length: 1, isWritable: true),
            ])!
            heads.append(head)
            data += UInt64(bytes)
        }
        self.heads = heads
        self.driver = driver
        // Reclaim the initial publications so the loop starts from an empty ring.
        let start = VringStart(index: 0, layout: layout, base: 0, eventIndex: true, kick: kick, call: nil,
                               enabled: true, memory: memory, log: nil, inflight: nil)
        let handler = device.makeRequestHandler(queueIndex: 0)
        worker = try VringWorker(start: start, handler: allocatingControl ? AllocatingHandler(handler) : handler,
                                 logger: Logger(label: "bench"))
        kick.signal()
        for _ in 0..<slots { _ = waitOne() }
    }

    /// Spins until one request completes; returns its used length.
    @inline(__always)
    func waitOne() -> UInt32 {
        while true {
            if let used = driver.popUsed(releasing: false) { return used.length }
        }
    }

    /// One request at queue depth 1.
    @inline(__always)
    func oneRequest(slot: Int) {
        driver.publish(head: heads[slot])
        if driver.needsKick() { kick.signal() }
        blackHole(waitOne())
    }

    deinit {
        _ = worker.stop()
        try? SharedMemoryPageStore.remove(volume: volume)
    }
}

/// An object whose allocation the control benchmarks count.
final class Probe {
    var value = 0
}

/// Wraps the real handler and allocates one `Probe` per request on the queue thread: the
/// control showing that allocations on that thread are counted too.
final class AllocatingHandler: VirtqueueRequestHandler {
    let inner: any VirtqueueRequestHandler
    init(_ inner: any VirtqueueRequestHandler) { self.inner = inner }
    func handle(_ chain: DescriptorChain, writer: GuestMemoryWriter) -> UInt32 {
        blackHole(Probe())
        return inner.handle(chain, writer: writer)
    }
    func queueStopped() { inner.queueStopped() }
}

let benchmarks: @Sendable () -> Void = {
    let metrics: [BenchmarkMetric] = [.mallocCountTotal, .wallClock, .throughput]
    let configuration = Benchmark.Configuration(metrics: metrics, scalingFactor: .one, maxDuration: .seconds(3),
                                                maxIterations: 20_000)
    for (name, type, bytes) in [("read 4 KiB", BlockRequestType.read, UInt32(4096)),
                                ("write 4 KiB", .write, 4096),
                                ("read 128 KiB", .read, 128 << 10)] {
        Benchmark("request path: \(name), QD1", configuration: configuration) { benchmark, rig in
            var slot = 0
            for _ in benchmark.scaledIterations {
                rig.oneRequest(slot: slot)
                slot = (slot + 1) % rig.heads.count
            }
        } setup: {
            try Rig(requestType: type, bytes: bytes, slots: 16)
        }
    }
    // The control: one heap object per request on the queue thread must read as 1, or the
    // zeros above mean nothing.
    Benchmark("control: the queue thread allocates once per request", configuration: configuration) { benchmark, rig in
        var slot = 0
        for _ in benchmark.scaledIterations {
            rig.oneRequest(slot: slot)
            slot = (slot + 1) % rig.heads.count
        }
    } setup: {
        try Rig(requestType: .read, bytes: 4096, slots: 16, allocatingControl: true)
    }
}
