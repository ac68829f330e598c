/// The retransmission timer and in-flight window of one UDP server link: a state machine with
/// no I/O and no clock of its own (times come in as nanoseconds), so tests drive it directly.
///
/// Timer: Jacobson/Karels smoothed round-trip time (RFC 6298), sampled only from replies to
/// requests never retransmitted (Karn), RTO = srtt + 4·rttvar clamped to
/// [`rtoNanosMin`, `rtoNanosMax`]; each retransmission of a request doubles its own timer.
/// Window: additive increase (one request per window's worth of replies), multiplicative
/// decrease (halve on a retransmission timeout, at most once per RTO), between 1 and
/// `WireLimits.inFlightMax` requests.
public struct LossControl: Sendable {
    public static let rtoNanosMin: UInt64 = 2_000_000
    public static let rtoNanosMax: UInt64 = 500_000_000
    /// Before any sample: a loaded server on a LAN answers well within this.
    public static let rtoNanosInitial: UInt64 = 20_000_000

    public private(set) var window: Double
    public private(set) var smoothedNanos: Double = 0
    private var varianceNanos: Double = 0
    private var lastDecrease: UInt64 = 0
    /// Retransmissions since the link came up (for logs and tests).
    public private(set) var retransmissions: UInt64 = 0

    public init(window: Int = WireLimits.inFlightMax) { self.window = Double(window) }

    /// Requests allowed in flight now (at least one).
    public var limit: Int { max(1, Int(window)) }

    /// The current retransmission timeout.
    public var rtoNanos: UInt64 {
        guard smoothedNanos > 0 else { return Self.rtoNanosInitial }
        let rto = UInt64(smoothedNanos + 4 * varianceNanos)
        return min(max(rto, Self.rtoNanosMin), Self.rtoNanosMax)
    }

    /// A reply arrived; `sampleNanos` is its round trip if the request was sent once.
    public mutating func acknowledged(sampleNanos: UInt64?) {
        if let sampleNanos {
            let sample = Double(sampleNanos)
            if smoothedNanos == 0 {
                smoothedNanos = sample
                varianceNanos = sample / 2
            } else {
                varianceNanos = 0.75 * varianceNanos + 0.25 * abs(smoothedNanos - sample)
                smoothedNanos = 0.875 * smoothedNanos + 0.125 * sample
            }
        }
        window = min(Double(WireLimits.inFlightMax), window + 1 / window)
    }

    /// A request's timer expired at `now`: it is sent again; the window halves (once per RTO).
    public mutating func timedOut(now: UInt64) {
        retransmissions += 1
        if now &- lastDecrease >= rtoNanos {
            window = max(1, window / 2)
            lastDecrease = now
        }
    }
}
