/// One benchmark workload, such as `randread-4k-qd32`. It has an access pattern, a direction,
/// a request size and a queue depth (requests kept in flight on each queue).
struct Workload: Equatable, Sendable, CustomStringConvertible {
    enum Pattern: String, Sendable { case random = "rand", sequential = "seq" }
    enum Direction: String, Sendable { case read, write }

    /// Offsets of random workloads are aligned to this (a page, as a guest's page cache sees
    /// them).
    static let offsetAlignment: UInt64 = 4096
    /// Largest request we accept: anything larger would only measure memcpy.
    static let requestBytesMax = 4 * 1024 * 1024
    /// The default list, the one named in the task.
    static let defaultList = "randread-4k-qd1,randwrite-4k-qd1,randread-4k-qd32,randwrite-4k-qd32,seqread-128k-qd1"

    var pattern: Pattern
    var direction: Direction
    var requestBytes: Int
    var queueDepth: Int

    var description: String {
        let size = requestBytes % (1024 * 1024) == 0 ? "\(requestBytes / (1024 * 1024))m" : "\(requestBytes / 1024)k"
        return "\(pattern.rawValue)\(direction.rawValue)-\(size)-qd\(queueDepth)"
    }

    var isRead: Bool { direction == .read }

    /// Parses `<rand|seq><read|write>-<N>[k|m]-qd<N>`. The size must be a multiple of 4 KiB.
    static func parse(_ text: String) throws(BenchError) -> Workload {
        let parts = text.lowercased().split(separator: "-").map(String.init)
        guard parts.count == 3 else { throw .usage("workload '\(text)' is not <rand|seq><read|write>-<size>-qd<N>") }
        let kind = parts[0]
        let pattern: Pattern = kind.hasPrefix("rand") ? .random : .sequential
        guard let direction = Direction(rawValue: String(kind.dropFirst(pattern.rawValue.count))),
              kind.hasPrefix(pattern.rawValue)
        else { throw .usage("workload '\(text)': '\(kind)' is not randread, randwrite, seqread or seqwrite") }
        guard let bytes = ByteCount.parse(parts[1]), bytes >= 4096, bytes % 4096 == 0,
              bytes <= UInt64(requestBytesMax)
        else {
            throw .usage(
                "workload '\(text)': size '\(parts[1])' must be a multiple of 4k up to \(requestBytesMax / 1048576)m")
        }
        guard parts[2].hasPrefix("qd"), let depth = Int(parts[2].dropFirst(2)), depth >= 1, depth <= 1024 else {
            throw .usage("workload '\(text)': queue depth '\(parts[2])' must be qd1...qd1024")
        }
        return Workload(pattern: pattern, direction: direction, requestBytes: Int(bytes), queueDepth: depth)
    }

    static func parseList(_ text: String) throws(BenchError) -> [Workload] {
        let names = text.split(separator: ",").map { String($0).trimmingSpaces() }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw .usage("--workloads is empty") }
        var workloads: [Workload] = []
        for name in names { workloads.append(try parse(name)) }
        return workloads
    }
}

/// The offsets one queue of one workload visits: random 4 KiB-aligned offsets, or a
/// sequential sweep that wraps at the end of the region.
struct OffsetSequence {
    let workload: Workload
    let regionBytes: UInt64
    private let randomChoices: UInt64
    private var cursor: UInt64

    /// `start` staggers queues of a sequential workload so that they do not read the same
    /// blocks.
    init(workload: Workload, regionBytes: UInt64, start: UInt64 = 0) {
        precondition(regionBytes >= UInt64(workload.requestBytes), "region smaller than one request")
        self.workload = workload
        self.regionBytes = regionBytes
        randomChoices = (regionBytes - UInt64(workload.requestBytes)) / Workload.offsetAlignment + 1
        let size = UInt64(workload.requestBytes)
        cursor = (start / size * size) % (regionBytes / size * size)
    }

    @inline(__always)
    mutating func next(_ generator: inout SeededGenerator) -> UInt64 {
        switch workload.pattern {
        case .random:
            return generator.next(upperBound: randomChoices) * Workload.offsetAlignment
        case .sequential:
            let offset = cursor
            cursor += UInt64(workload.requestBytes)
            if cursor + UInt64(workload.requestBytes) > regionBytes { cursor = 0 }
            return offset
        }
    }
}

/// Byte counts with binary suffixes: "4096", "4k", "128K", "1G", "1GiB".
enum ByteCount {
    static func parse(_ text: String) -> UInt64? {
        var digits = text.lowercased()
        if digits.hasSuffix("ib") { digits.removeLast(2) }
        if digits.hasSuffix("b") { digits.removeLast() }
        var multiplier: UInt64 = 1
        switch digits.last {
        case "k": multiplier = 1 << 10
        case "m": multiplier = 1 << 20
        case "g": multiplier = 1 << 30
        case "t": multiplier = 1 << 40
        default: break
        }
        if multiplier > 1 { digits.removeLast() }
        guard let value = UInt64(digits) else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}

extension String {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}
