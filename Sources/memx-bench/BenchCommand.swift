import ArgumentParser

/// memx-bench's command line. Every flag is checked here and turned into `BenchSettings`.
/// Anything wrong is a `BenchError.usage`, which exits 2 with one line.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memx-bench",
        abstract: "Benchmark any vhost-user-blk backend (memx-vhost, qemu-storage-daemon) through a Swift frontend.",
        discussion: """
            Connects to SOCKET as QEMU 7.2 would, prefills the measured region, verifies a sample \
            of it, then runs each workload (warm-up, then a timed window) and prints IOPS, MB/s \
            and p50/p99/p99.9 latency. Exit status: 0 ok, 1 run failure (I/O error, data \
            mismatch), 2 bad flags or unreachable socket.
            """)

    enum CompletionMode: String, ExpressibleByArgument, CaseIterable, Sendable { case poll, interrupt }
    enum DescriptorMode: String, ExpressibleByArgument, CaseIterable, Sendable { case indirect, direct }
    enum PrefillMode: String, ExpressibleByArgument, CaseIterable, Sendable { case auto, always, never }

    @Option(help: "Path of the backend's vhost-user socket.")
    var socket: String

    @Option(help: "Name for this backend in the report (default: the socket file name).")
    var label: String?

    @Option(help: "Comma-separated <rand|seq><read|write>-<size>-qd<N> list.")
    var workloads: String = Workload.defaultList

    @Option(help: "Measured seconds per workload.")
    var seconds: Double = 5

    @Option(help: "Warm-up seconds per workload (not measured).")
    var warmupSeconds: Double = 1

    @Option(help: "Queues to drive, one thread each; every queue runs the workload at its depth.")
    var queues: Int = 1

    @Option(help: "Ring size per queue (QEMU's default is 128).")
    var queueSize: Int = 128

    @Option(help: "Confine offsets to the first BYTES of the disk (suffixes k, m, g).")
    var sizeLimit: String?

    @Flag(help: "Print one JSON document on stdout instead of the table.")
    var json = false

    @Option(help: "Seed for offsets and verification patterns.")
    var seed: UInt64 = 1

    @Option(help: "How completions are awaited: poll the used ring, or sleep on the call eventfd.")
    var completion: CompletionMode = .poll

    @Option(help: "indirect (one ring slot per request, as Linux does) or direct chains.")
    var descriptors: DescriptorMode = .indirect

    @Option(help: "auto: prefill unless this seed's pattern is already there; always; never.")
    var prefill: PrefillMode = .auto

    @Option(help: "Random 4 KiB blocks written and read back before the timed runs (0 skips verification).")
    var verifyBlocks: Int = 64

    @Option(help: "Seconds a single request may take before the run fails.")
    var timeoutSeconds: Double = 5

    func run() throws {}

    /// Limits on the flags, each with its reason.
    enum Limits {
        /// QEMU's largest ring.
        static let queueSizeMax = 1024
        /// More queues than this only oversubscribes the CPUs we run on.
        static let queuesMax = 64
        /// A day; longer runs are a typo.
        static let secondsMax: Double = 86_400
    }

    func settings() throws(BenchError) -> BenchSettings {
        let list = try Workload.parseList(workloads)
        guard seconds > 0, seconds <= Limits.secondsMax else {
            throw .usage("--seconds must be in (0, \(Int(Limits.secondsMax))]")
        }
        guard warmupSeconds >= 0, warmupSeconds <= Limits.secondsMax else { throw .usage("--warmup-seconds must be ≥ 0") }
        guard queues >= 1, queues <= Limits.queuesMax else { throw .usage("--queues must be 1...\(Limits.queuesMax)") }
        guard queueSize >= 2, queueSize <= Limits.queueSizeMax, queueSize & (queueSize - 1) == 0 else {
            throw .usage("--queue-size must be a power of two in 2...\(Limits.queueSizeMax)")
        }
        guard timeoutSeconds > 0 else { throw .usage("--timeout-seconds must be > 0") }
        guard verifyBlocks >= 0, verifyBlocks <= 1 << 20 else { throw .usage("--verify-blocks must be 0...1048576") }
        var limit: UInt64?
        if let sizeLimit {
            guard let bytes = ByteCount.parse(sizeLimit), bytes >= 4096 else {
                throw .usage("--size-limit '\(sizeLimit)' is not a byte count ≥ 4096 (e.g. 256m, 1g)")
            }
            limit = bytes
        }
        for workload in list where workload.queueDepth > queueSize {
            throw .usage("\(workload): queue depth \(workload.queueDepth) exceeds --queue-size \(queueSize)")
        }
        if descriptors == .direct {
            // header + one data segment + status per request, unless size_max splits it further.
            for workload in list where workload.queueDepth * 3 > queueSize {
                throw .usage(
                    "\(workload): \(workload.queueDepth) direct chains of 3 descriptors do not fit a ring of \(queueSize)")
            }
        }
        let name = label ?? String(socket.split(separator: "/").last ?? Substring(socket))
        return BenchSettings(socketPath: socket, label: name, workloads: list, seconds: seconds, warmupSeconds: warmupSeconds,
                             queues: queues, queueSize: UInt16(queueSize), sizeLimitBytes: limit, json: json, seed: seed,
                             completion: completion, descriptors: descriptors, prefill: prefill, verifyBlocks: verifyBlocks,
                             requestTimeout: .milliseconds(Int64(timeoutSeconds * 1000)))
    }
}

/// The validated settings of one memx-bench run.
struct BenchSettings: Sendable {
    var socketPath: String
    var label: String
    var workloads: [Workload]
    var seconds: Double
    var warmupSeconds: Double
    var queues: Int
    var queueSize: UInt16
    var sizeLimitBytes: UInt64?
    var json: Bool
    var seed: UInt64
    var completion: BenchCommand.CompletionMode
    var descriptors: BenchCommand.DescriptorMode
    var prefill: BenchCommand.PrefillMode
    var verifyBlocks: Int
    var requestTimeout: Duration

    /// The largest request any workload, prefill or the verification extent makes.
    var requestBytesMax: Int { max(workloads.map(\.requestBytes).max() ?? 0, 128 * 1024) }

    /// Slots per queue: enough for the deepest workload and for prefill.
    var slotsPerQueue: Int {
        let ringSlots = descriptors == .direct ? Int(queueSize) / 3 : Int(queueSize)
        return max(1, min(ringSlots, max(workloads.map(\.queueDepth).max() ?? 1, DataPreparation.prefillDepthMax)))
    }
}
