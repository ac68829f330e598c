/// A size given on the command line: a number with an optional binary suffix K, M, G or T
/// (case-insensitive, optional trailing "B" or "iB"), e.g. `256M`, `1G`, `4096`. Shared by
/// `memx-vhost --size/--cache` and `memx-server --memory`, so every tool reads sizes alike.
public struct ByteSize: Equatable, Sendable {
    public let bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    /// Parses `text`; nil for anything that is not a size or overflows 64 bits.
    public init?(parsing text: String) {
        var digits = Substring(text.uppercased())
        if digits.hasSuffix("IB") { digits = digits.dropLast(2) } else if digits.hasSuffix("B") { digits = digits.dropLast() }
        var shift: UInt64 = 0
        switch digits.last {
        case "K": shift = 10
        case "M": shift = 20
        case "G": shift = 30
        case "T": shift = 40
        default: break
        }
        if shift > 0 { digits = digits.dropLast() }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), let value = UInt64(digits),
              value <= UInt64.max >> shift
        else { return nil }
        bytes = value << shift
    }

    /// "1 GiB", "256 MiB", "4096 B".
    public static func describe(_ bytes: UInt64) -> String {
        for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> UInt64(shift)) \(unit)"
        }
        return "\(bytes) B"
    }
}
