import Virtio

/// One workload's numbers, summed over all queues.
struct WorkloadResult: Sendable {
    let workload: Workload
    let queue: QueueResult
    let measureSeconds: Double

    var iops: Double { Double(queue.ios) / measureSeconds }
    /// Decimal megabytes per second (10^6 bytes), as fio's "MB/s".
    var megabytesPerSecond: Double { iops * Double(workload.requestBytes) / 1e6 }
    func latencyMicros(_ percentile: Double) -> Double { Double(queue.histogram.percentile(percentile)) / 1000 }
    var meanMicros: Double { queue.histogram.meanNanos / 1000 }
    var maxMicros: Double { Double(queue.histogram.maxNanos) / 1000 }
    var kicksPerRequest: Double { queue.submitted == 0 ? 0 : Double(queue.kicks) / Double(queue.submitted) }
}

/// Everything a run measured, rendered as the human table or as JSON.
struct BenchReport: Sendable {
    let settings: BenchSettings
    let capacityBytes: UInt64
    let regionBytes: UInt64
    let features: UInt64
    let protocolFeatures: UInt64
    let config: BlockConfigSpace?
    var prefillSeconds: Double?
    var verifiedExtents = 0
    var results: [WorkloadResult] = []

    // MARK: Table

    static let columns: [(title: String, width: Int)] = [
        ("workload", 20), ("IOPS", 11), ("MB/s", 9), ("p50 µs", 9), ("p99 µs", 9), ("p99.9 µs", 9),
    ]

    /// The lines printed before the first row.
    func tableHeader() -> String {
        var lines = [
            "# \(settings.label): \(settings.socketPath)",
            "# disk \(TextFormatting.bytes(capacityBytes)), region \(TextFormatting.bytes(regionBytes)), "
                + "queues \(settings.queues) × \(settings.queueSize), \(TextFormatting.fixed(settings.seconds, 1)) s "
                + "(+\(TextFormatting.fixed(settings.warmupSeconds, 1)) s warm-up), completion \(settings.completion.rawValue), "
                + "\(settings.descriptors.rawValue) descriptors, seed \(settings.seed)",
        ]
        var titles = ""
        for (i, column) in Self.columns.enumerated() {
            titles += i == 0 ? TextFormatting.left(column.title, column.width) : " " + TextFormatting.right(column.title, column.width)
        }
        lines.append(titles)
        return lines.joined(separator: "\n")
    }

    func tableRow(_ result: WorkloadResult) -> String {
        let cells = [
            result.workload.description,
            TextFormatting.fixed(result.iops, 0),
            TextFormatting.fixed(result.megabytesPerSecond, 1),
            TextFormatting.fixed(result.latencyMicros(50), 1),
            TextFormatting.fixed(result.latencyMicros(99), 1),
            TextFormatting.fixed(result.latencyMicros(99.9), 1),
        ]
        var row = ""
        for (i, (cell, column)) in zip(cells, Self.columns).enumerated() {
            row += i == 0 ? TextFormatting.left(cell, column.width) : " " + TextFormatting.right(cell, column.width)
        }
        if result.queue.usedLengthMismatches > 0 {
            row += "  (\(result.queue.usedLengthMismatches) reads with used len ≠ data + 1)"
        }
        return row
    }

    // MARK: JSON

    /// One JSON object. Latencies are in microseconds, and `mb_per_s` is in 10^6 bytes.
    func json() -> String {
        func number(_ value: Double, _ digits: Int = 1) -> String { TextFormatting.fixed(value, digits) }
        var fields: [String] = [
            "\"label\": \(TextFormatting.json(settings.label))",
            "\"socket\": \(TextFormatting.json(settings.socketPath))",
            "\"capacity_bytes\": \(capacityBytes)",
            "\"region_bytes\": \(regionBytes)",
            "\"queues\": \(settings.queues)",
            "\"queue_size\": \(settings.queueSize)",
            "\"seconds\": \(number(settings.seconds, 3))",
            "\"warmup_seconds\": \(number(settings.warmupSeconds, 3))",
            "\"seed\": \(settings.seed)",
            "\"completion\": \"\(settings.completion.rawValue)\"",
            "\"descriptors\": \"\(settings.descriptors.rawValue)\"",
            "\"features\": \"0x\(String(features, radix: 16))\"",
            "\"protocol_features\": \"0x\(String(protocolFeatures, radix: 16))\"",
            "\"verified_extents\": \(verifiedExtents)",
        ]
        if let prefillSeconds { fields.append("\"prefill_seconds\": \(number(prefillSeconds, 3))") }
        if let config {
            fields.append("\"config\": {\"capacity_sectors\": \(config.capacitySectors), \"seg_max\": \(config.segMax), "
                + "\"size_max\": \(config.sizeMax), \"blk_size\": \(config.blockSize), \"num_queues\": \(config.numQueues), "
                + "\"wce\": \(config.writeCacheEnabled)}")
        }
        let rows = results.map { result in
            "    {\"workload\": \"\(result.workload)\", \"ios\": \(result.queue.ios), "
                + "\"iops\": \(number(result.iops)), \"mb_per_s\": \(number(result.megabytesPerSecond, 2)), "
                + "\"p50_us\": \(number(result.latencyMicros(50), 2)), \"p99_us\": \(number(result.latencyMicros(99), 2)), "
                + "\"p999_us\": \(number(result.latencyMicros(99.9), 2)), \"mean_us\": \(number(result.meanMicros, 2)), "
                + "\"max_us\": \(number(result.maxMicros, 2)), \"kicks_per_request\": \(number(result.kicksPerRequest, 3)), "
                + "\"used_length_mismatches\": \(result.queue.usedLengthMismatches)}"
        }
        fields.append("\"results\": [\n" + rows.joined(separator: ",\n") + "\n  ]")
        return "{\n  " + fields.joined(separator: ",\n  ") + "\n}"
    }
}
