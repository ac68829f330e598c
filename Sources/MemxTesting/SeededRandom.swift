import Glibc

/// A seeded pseudo-random generator for tests: xoshiro256** with its state expanded from one
/// 64-bit seed by SplitMix64 (the seeding Vigna recommends). Same seed, same sequence, on every
/// platform, so a failing run can be replayed with `MEMX_SEED=<seed>` (style rule 13; TigerBeetle
/// `src/testing/`).
///
/// Not cryptographic. Not `Sendable` on purpose: one test owns one generator.
public struct SeededRandom: RandomNumberGenerator {
    /// The seed this generator started from.
    public let seed: UInt64
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        self.seed = seed
        var mixer = SplitMix64(state: seed)
        s0 = mixer.next()
        s1 = mixer.next()
        s2 = mixer.next()
        s3 = mixer.next()
    }

    /// A generator seeded from `MEMX_SEED` if set (decimal or 0x-hex), else from `defaultSeed`.
    public init(environmentOr defaultSeed: UInt64 = SeededRandom.defaultSeed) {
        self.init(seed: TestEnvironment.seed(default: defaultSeed))
    }

    /// The fixed seed used when `MEMX_SEED` is not set: runs are reproducible by default.
    public static let defaultSeed: UInt64 = 0x6d65_6d78_5f73_6565  // "memx_see"

    public mutating func next() -> UInt64 {
        let result = rotateLeft(s1 &* 5, 7) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = rotateLeft(s3, 45)
        return result
    }

    /// The line a failing test prints so the run can be replayed.
    public var reproduceHint: String { "reproduce with MEMX_SEED=\(seed)" }

    /// True with probability `numerator / denominator`.
    public mutating func chance(_ numerator: UInt64, in denominator: UInt64) -> Bool {
        UInt64.random(in: 0..<denominator, using: &self) < numerator
    }

    /// One of `choices`, uniformly.
    public mutating func pick<T>(_ choices: [T]) -> T {
        precondition(!choices.isEmpty)
        return choices[Int.random(in: 0..<choices.count, using: &self)]
    }

    /// `count` random bytes.
    public mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var i = 0
        while i < count {
            var word = next()
            for _ in 0..<min(8, count - i) {
                result[i] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                i += 1
            }
        }
        return result
    }

    @inline(__always)
    private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}

/// SplitMix64 (Steele, Lea, Flood 2014): expands one seed into a well-mixed stream.
public struct SplitMix64: RandomNumberGenerator {
    public private(set) var state: UInt64
    public init(state: UInt64) { self.state = state }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// Test knobs read from the environment, with safe defaults so a plain `swift test` is fast and
/// reproducible.
public enum TestEnvironment {
    /// `MEMX_SEED`, or `defaultSeed` if unset or unparsable.
    public static func seed(default defaultSeed: UInt64) -> UInt64 {
        integer("MEMX_SEED") ?? defaultSeed
    }

    /// `MEMX_PROPERTY_ITERATIONS`, or `defaultCount` if unset or unparsable.
    public static func propertyIterations(default defaultCount: Int) -> Int {
        integer("MEMX_PROPERTY_ITERATIONS").map { Int(clamping: $0) } ?? defaultCount
    }

    /// `MEMX_FUZZ_SEED`, else `MEMX_SEED`, else `defaultSeed`: the fuzz suite's seed.
    public static func fuzzSeed(default defaultSeed: UInt64) -> UInt64 {
        integer("MEMX_FUZZ_SEED") ?? seed(default: defaultSeed)
    }

    /// `MEMX_FUZZ_ITERATIONS`, or `defaultCount` if unset or unparsable: the fuzz suite's
    /// length (small for CI; millions for the opt-in long run).
    public static func fuzzIterations(default defaultCount: Int) -> Int {
        integer("MEMX_FUZZ_ITERATIONS").map { Int(clamping: $0) } ?? defaultCount
    }

    /// An unsigned integer variable, decimal or 0x-prefixed hex.
    public static func integer(_ name: String) -> UInt64? {
        guard let raw = getenv(name) else { return nil }
        let text = String(cString: raw).trimmingSpaces()
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return UInt64(text.dropFirst(2), radix: 16) }
        return UInt64(text)
    }
}

extension String {
    fileprivate func trimmingSpaces() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
