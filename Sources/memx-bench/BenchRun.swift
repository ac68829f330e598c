import LinuxSystem
import VhostUser
import Virtio

/// One memx-bench run from start to finish. It connects as QEMU 7.2 would, starts the queues,
/// prefills and verifies on queue 0, runs each workload on every queue, and stops the device.
///
/// This is wiring only. The protocol lives in `VhostUser.FrontendClient`, the data patterns in
/// `DataPreparation`, and the timed loop in `QueueRunner`.
struct BenchRun {
    let settings: BenchSettings
    /// Called with the report so far and each workload's result as soon as it is measured, so
    /// the table can stream rows.
    var onResult: (BenchReport, WorkloadResult) -> Void = { _, _ in }

    /// Guest RAM beyond the queues' needs: alignment slack plus the q35 low region, which
    /// holds rings but no data buffers.
    static let guestRAMSlackBytes: UInt64 = 2 << 20

    func execute() throws(BenchError) -> BenchReport {
        let client = try connect()
        let capacity = client.capacityBytes
        let regionBytes = min(capacity, settings.sizeLimitBytes ?? capacity) / 4096 * 4096
        guard regionBytes >= UInt64(settings.requestBytesMax) else {
            throw .usage("the measured region (\(regionBytes) bytes of a \(capacity)-byte disk) is smaller than one "
                + "\(settings.requestBytesMax)-byte request")
        }
        guard settings.queues <= client.queueCountMax else {
            throw .usage("--queues \(settings.queues) but the backend offers \(client.queueCountMax) queue(s)")
        }
        let queues = try startQueues(client)
        let acked = client.ackedFeatures ?? []
        if acked.contains(.blockReadOnly) && settings.workloads.contains(where: { !$0.isRead }) {
            throw .usage("the backend exports a read-only disk; drop the write workloads")
        }
        var report = BenchReport(settings: settings, capacityBytes: capacity, regionBytes: regionBytes,
                                 features: acked.rawValue, protocolFeatures: client.protocolFeatures.rawValue,
                                 config: client.config)
        let preparation = DataPreparation(queue: queues[0], regionBytes: regionBytes, seed: settings.seed,
                                          flushSupported: acked.contains(.blockFlush))
        try prepare(preparation, report: &report)

        for workload in settings.workloads {
            let result = try run(workload, queues: queues, regionBytes: regionBytes)
            report.results.append(result)
            onResult(report, result)
        }
        do {
            try client.stop()
        } catch {
            throw .frontend(error, during: "stopping the device (SET_VRING_ENABLE 0, GET_VRING_BASE)")
        }
        return report
    }

    private func connect() throws(BenchError) -> FrontendClient {
        let perQueue = BlockQueueArea.bytesNeeded(queueSize: settings.queueSize, slotCount: settings.slotsPerQueue,
                                                  dataBytesPerSlot: settings.requestBytesMax,
                                                  dataSegmentsMax: settings.requestBytesMax / 512 + 1)
        let ramBytes = (perQueue * UInt64(settings.queues) + Self.guestRAMSlackBytes + 0xfffff) & ~0xfffff
        let client: FrontendClient
        do {
            let ram = try GuestRAM(sizeBytes: ramBytes, layout: .q35, name: "memx-bench-guest-ram")
            var options = FrontendOptions()
            options.replyTimeout = settings.requestTimeout
            client = try FrontendClient(socketPath: settings.socketPath, guestRAM: ram, options: options)
        } catch {
            if case .connectFailed = error { throw .unreachable(error.description) }
            throw .frontend(error, during: "setting up the frontend")
        }
        do {
            let config = try client.negotiate()
            StandardError.line("memx-bench: \(settings.label): connected to \(settings.socketPath): "
                + "\(TextFormatting.bytes(config.capacitySectors * 512)), \(client.queueCountMax) queue(s), "
                + "features 0x\(String(client.backendFeatures.rawValue, radix: 16)), "
                + "protocol features 0x\(String(client.protocolFeatures.rawValue, radix: 16))")
        } catch {
            switch error {
            case .disconnected, .timedOut, .socket:
                throw .unreachable("\(settings.socketPath) accepted the connection but the handshake failed: \(error)")
            default:
                throw .frontend(error, during: "vhost-user handshake")
            }
        }
        return client
    }

    private func startQueues(_ client: FrontendClient) throws(BenchError) -> [BlockQueueClient] {
        var options = BlockQueueOptions()
        options.slotCount = settings.slotsPerQueue
        options.dataBytesPerSlot = settings.requestBytesMax
        options.descriptorLayout = settings.descriptors == .indirect ? .indirect : .direct
        options.completionWait = settings.completion == .poll ? .pollUsedRing : .callNotifier
        options.requestTimeout = settings.requestTimeout
        do {
            return try client.start(queues: settings.queues, queueSize: settings.queueSize, queueOptions: options)
        } catch {
            if case .missingFeature = error { throw .usage(error.description) }
            throw .frontend(error, during: "starting the device")
        }
    }

    private func prepare(_ preparation: DataPreparation, report: inout BenchReport) throws(BenchError) {
        let label = "memx-bench: \(settings.label)"
        if settings.workloads.contains(where: \.isRead) && settings.prefill != .never {
            if settings.prefill == .auto, try preparation.prefillIsPresent() {
                StandardError.line("\(label): prefill from an earlier run with seed \(settings.seed) found; not rewriting")
            } else {
                let took = try preparation.prefill()
                let seconds = took.inSeconds
                report.prefillSeconds = seconds
                StandardError.line("\(label): prefilled \(TextFormatting.bytes(preparation.regionBytes)) in "
                    + "\(TextFormatting.fixed(seconds, 2)) s "
                    + "(\(TextFormatting.fixed(Double(preparation.regionBytes) / seconds / 1e6, 0)) MB/s)")
            }
        }
        if settings.verifyBlocks > 0 {
            let checked = try preparation.verify(sampleBlocks: settings.verifyBlocks, extentBytes: settings.requestBytesMax)
            report.verifiedExtents = checked
            StandardError.line("\(label): verified \(checked) extents (write, read back, compare; twice)")
        }
    }

    private func run(_ workload: Workload, queues: [BlockQueueClient],
                     regionBytes: UInt64) throws(BenchError) -> WorkloadResult {
        let start = ContinuousClock.now
        let measureStart = start.advanced(by: .milliseconds(Int64(settings.warmupSeconds * 1000)))
        let schedule = RunSchedule(measureStart: measureStart,
                                   measureEnd: measureStart.advanced(by: .milliseconds(Int64(settings.seconds * 1000))))
        var total = QueueResult()
        if queues.count == 1 {
            total = try QueueRunner.run(queue: queues[0], queueCount: 1, workload: workload, regionBytes: regionBytes,
                                        seed: settings.seed, schedule: schedule, requestTimeout: settings.requestTimeout)
        } else {
            let jobs = queues.map {
                QueueJob(queue: $0, queueCount: queues.count, workload: workload, regionBytes: regionBytes,
                         seed: settings.seed, schedule: schedule, requestTimeout: settings.requestTimeout)
            }
            var threads: [OSThread] = []
            for job in jobs {
                do {
                    threads.append(try OSThread(name: "bench-q\(job.queue.index)") { job.run() })
                } catch {
                    for thread in threads { thread.join() }
                    throw .frontend(.socket(operation: "pthread_create", errno: error), during: "\(workload)")
                }
            }
            for thread in threads { thread.join() }
            for job in jobs {
                switch job.result {
                case .success(let result): total.merge(result)
                case .failure(let error): throw error
                case nil: throw .requestFailed("\(workload): queue \(job.queue.index) thread produced no result")
                }
            }
        }
        return WorkloadResult(workload: workload, queue: total, measureSeconds: schedule.measureSeconds)
    }
}
