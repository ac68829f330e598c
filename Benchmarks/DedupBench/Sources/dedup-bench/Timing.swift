import Glibc

/// Nanoseconds of the monotonic clock.
func nowNanos() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// `count` bytes of seeded pseudo-random data (xorshift64*), the same on every run.
func randomBytes(_ count: Int, seed: UInt64) -> UnsafeMutableRawBufferPointer {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    var state = seed | 1
    for offset in stride(from: 0, to: count, by: 8) {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        buffer.storeBytes(of: state &* 0x2545_f491_4f6c_dd1d, toByteOffset: offset, as: UInt64.self)
    }
    return buffer
}

/// One line on stderr.
func printError(_ line: String) {
    var text = line + "\n"
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

/// `value` with `decimals` digits after the point.
func fixed(_ value: Double, _ decimals: Int) -> String {
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = Int64((value * scale).rounded())
    guard decimals > 0 else { return "\(scaled)" }
    let whole = scaled / Int64(scale)
    let fraction = String(abs(scaled % Int64(scale)))
    return "\(whole)." + String(repeating: "0", count: decimals - fraction.count) + fraction
}
