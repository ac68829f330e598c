import RemoteMem

/// Numbers as the human tables show them: sizes in binary units, percentages and round trips.
enum HumanFormat {
    /// "0 B", "512 B", "4 KiB", "1.5 GiB": whole numbers when exact, else one decimal.
    static func bytes(_ bytes: UInt64) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
        guard bytes >= 1024 else { return "\(bytes) B" }
        var index = 0
        var scale: UInt64 = 1024
        while index + 1 < units.count, bytes / scale >= 1024 {
            index += 1
            scale <<= 10
        }
        if bytes % scale == 0 { return "\(bytes / scale) \(units[index])" }
        return "\(oneDecimal(Double(bytes) / Double(scale))) \(units[index])"
    }

    /// "12.5%".
    static func percent(_ value: Double) -> String { oneDecimal(value) + "%" }

    /// A value rounded to one decimal, e.g. "0.1", "12.0".
    static func oneDecimal(_ value: Double) -> String {
        let tenths = Int64((value * 10).rounded())
        return "\(tenths / 10).\(abs(tenths % 10))"
    }

    /// A value rounded to two decimals for JSON (12.345 → 12.35).
    static func twoDecimals(_ value: Double) -> Double { (value * 100).rounded() / 100 }

    /// Whole microseconds of `duration`, rounded.
    static func microseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return seconds * 1_000_000 + (attoseconds + 500_000_000_000) / 1_000_000_000_000
    }

    /// Items (server addresses) joined by ", ".
    static func list(_ items: [String]) -> String { items.joined(separator: ", ") }
}
