/// A fixed-size log-linear latency histogram in nanoseconds, after HdrHistogram. Each power
/// of two is split into 128 sub-buckets, so any recorded value is known to within 0.8 %.
///
/// It is allocated once per run. `record` does no allocation and costs a few instructions,
/// so it can sit on the per-request path.
struct LatencyHistogram {
    /// Sub-buckets per power of two, as a bit count: 2^7 = 128, or 0.8 % resolution.
    static let subBucketBits = 7
    static let subBucketCount = 1 << subBucketBits
    /// Largest power of two tracked: 2^40 ns is about 18 minutes. Larger values clamp.
    static let exponentMax = 40
    static let bucketCount = (exponentMax - subBucketBits + 2) * subBucketCount

    private var counts: [UInt64]
    private(set) var count: UInt64 = 0
    private(set) var sumNanos: UInt64 = 0
    private(set) var maxNanos: UInt64 = 0
    private(set) var minNanos: UInt64 = .max

    init() { counts = [UInt64](repeating: 0, count: Self.bucketCount) }

    @inline(__always)
    static func bucket(of value: UInt64) -> Int {
        if value < UInt64(subBucketCount) { return Int(value) }
        let exponent = min(63 - value.leadingZeroBitCount, exponentMax)
        let shift = exponent - subBucketBits
        let mantissa = min(Int(value >> UInt64(shift)), 2 * subBucketCount - 1)
        return (shift + 1) * subBucketCount + (mantissa - subBucketCount)
    }

    /// The middle of the values that fall into `bucket`.
    static func value(of bucket: Int) -> UInt64 {
        if bucket < subBucketCount { return UInt64(bucket) }
        let shift = bucket / subBucketCount - 1
        let mantissa = UInt64(bucket % subBucketCount + subBucketCount)
        let low = mantissa << UInt64(shift)
        return low + ((UInt64(1) << UInt64(shift)) >> 1)
    }

    @inline(__always)
    mutating func record(_ nanos: UInt64) {
        counts[Self.bucket(of: nanos)] &+= 1
        count &+= 1
        sumNanos &+= nanos
        if nanos > maxNanos { maxNanos = nanos }
        if nanos < minNanos { minNanos = nanos }
    }

    mutating func merge(_ other: LatencyHistogram) {
        for i in counts.indices { counts[i] &+= other.counts[i] }
        count &+= other.count
        sumNanos &+= other.sumNanos
        maxNanos = max(maxNanos, other.maxNanos)
        minNanos = min(minNanos, other.minNanos)
    }

    /// The latency at or below which `percent` of the samples fall (0 if there are none).
    func percentile(_ percent: Double) -> UInt64 {
        guard count > 0 else { return 0 }
        let target = max(1, UInt64((percent / 100 * Double(count)).rounded(.up)))
        var seen: UInt64 = 0
        for (bucket, n) in counts.enumerated() where n > 0 {
            seen += n
            if seen >= target { return min(Self.value(of: bucket), maxNanos) }
        }
        return maxNanos
    }

    var meanNanos: Double { count == 0 ? 0 : Double(sumNanos) / Double(count) }
}
