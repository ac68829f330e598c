/// The benchmark's only source of randomness: xoshiro256**, seeded via SplitMix64, so one
/// `--seed` reproduces every offset and every verification pattern.
///
/// Runs against memx-vhost and qemu-storage-daemon with the same seed touch the same offsets
/// in the same order.
struct SeededGenerator: RandomNumberGenerator {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    init(seed: UInt64) {
        var mixer = seed
        func splitMix() -> UInt64 {
            mixer &+= 0x9e37_79b9_7f4a_7c15
            var z = mixer
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    /// A generator for one purpose (`stream`) derived from a run seed, so that adding a use of
    /// randomness in one place does not shift the offsets used elsewhere.
    init(seed: UInt64, stream: UInt64) {
        self.init(seed: seed ^ (stream &* 0xd6e8_feb8_6659_fd93))
    }

    mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }
}

/// Named random streams (see `SeededGenerator.init(seed:stream:)`).
enum RandomStream {
    static let prefillCheck: UInt64 = 1
    static let verification: UInt64 = 2
    /// Timed workloads use `workload + queue index`.
    static let workload: UInt64 = 100
}
