/// The 128-bit content hash of one 4 KiB page: what the de-duplication index (`FrameIndex`)
/// files a frame under, so that a page written later with the same bytes finds it.
///
/// A hash only picks candidates: two pages are the same page only after a full byte compare
/// (`PageArena.contentEquals`), so a collision, accidental or crafted, costs a compare and never
/// aliases two different pages.
public struct PageHash: Hashable, Sendable, CustomStringConvertible {
    public var low: UInt64
    public var high: UInt64

    public init(low: UInt64, high: UInt64) {
        self.low = low
        self.high = high
    }

    public var description: String {
        let hex = { (v: UInt64) in String(repeating: "0", count: v.leadingZeroBitCount / 4) + String(v, radix: 16) }
        return hex(high) + hex(low)
    }
}

/// MX128, memx-server's page hash: a keyed, non-cryptographic 128-bit hash of exactly one
/// 4 KiB page, written for this job (docs/DEDUP.md, "The hash").
///
/// Why not SHA-256: the byte compare already guarantees correctness, so the hash needs only to
/// spread pages evenly and be hard to collide *on purpose* for someone who does not know the
/// server's key; measured on this machine, MX128 hashes a page 13× faster than libcrypto's
/// SHA-256 with the CPU's SHA instructions (20.8 vs 1.56 GB/s; docs/DEDUP.md, "The hash").
///
/// How it works: four independent lanes (so the multiplier is kept busy) each take 16 bytes of
/// every 64-byte block; a lane multiplies its two words, each first mixed with its own key, to
/// a 128-bit product and folds the halves together, adds the second word on its own (so a
/// factor that happens to cancel to zero does not erase the other word), and rotates, so the
/// order of blocks matters. Eight 64-bit keys come from the seed; every server draws a random
/// seed at start, so nobody outside can predict which pages collide. The four lanes are folded
/// into two 64-bit halves, each finished with an xor-shift-multiply avalanche.
///
/// `truncated(toBits:)` keeps only a few bits of the hash: a deliberately weak hash for tests,
/// which forces collisions so that the byte compare is what keeps pages apart.
public struct PageHasher: Sendable {
    /// The eight lane keys (two per lane) plus two finishing keys.
    private let keys: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    /// Bits of the hash kept: 128 normally; fewer only in tests.
    public let bits: Int

    /// Bytes hashed: exactly one page.
    public static let pageBytes = 4096

    /// MX128 keyed by `seed`.
    public init(seed: UInt64) {
        self.init(seed: seed, bits: 128)
    }

    private init(seed: UInt64, bits: Int) {
        var state = seed
        // A small generator for the keys: add a constant, then scramble (any odd constants do).
        func nextKey() -> UInt64 {
            state &+= 0x9e6c_63d0_676a_9a99
            var x = state
            x = (x ^ (x >> 31)) &* 0xd6e8_feb8_6659_fd93
            x = (x ^ (x >> 29)) &* 0xa0761_d647_8bd6_42f
            return (x ^ (x >> 32)) | 1
        }
        keys = (nextKey(), nextKey(), nextKey(), nextKey(), nextKey(), nextKey(), nextKey(), nextKey(), nextKey(), nextKey())
        self.bits = bits
    }

    /// MX128 with a random key: what a server uses.
    public static func random() -> PageHasher {
        var random = SystemRandomNumberGenerator()
        return PageHasher(seed: random.next())
    }

    /// A deliberately weak hash for tests: only the low `bits` bits of MX128 (0: every page
    /// hashes alike), so pages with different bytes collide and only the byte compare tells
    /// them apart.
    public static func truncated(toBits bits: Int, seed: UInt64 = 1) -> PageHasher {
        precondition((0...64).contains(bits), "a truncated hash keeps 0 to 64 bits")
        return PageHasher(seed: seed, bits: bits)
    }

    /// The hash of the 4 KiB page at `page`.
    @inline(__always)
    public func hash(_ page: UnsafeRawPointer) -> PageHash {
        let (k0, k1, k2, k3, k4, k5, k6, k7, k8, k9) = keys
        var a0 = k0, a1 = k2, a2 = k4, a3 = k6
        var offset = 0
        while offset < Self.pageBytes {
            // SAFETY: the caller guarantees 4096 readable bytes at `page`; offset + 63 < 4096.
            let w0 = page.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            let w1 = page.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)
            let w2 = page.loadUnaligned(fromByteOffset: offset + 16, as: UInt64.self)
            let w3 = page.loadUnaligned(fromByteOffset: offset + 24, as: UInt64.self)
            let w4 = page.loadUnaligned(fromByteOffset: offset + 32, as: UInt64.self)
            let w5 = page.loadUnaligned(fromByteOffset: offset + 40, as: UInt64.self)
            let w6 = page.loadUnaligned(fromByteOffset: offset + 48, as: UInt64.self)
            let w7 = page.loadUnaligned(fromByteOffset: offset + 56, as: UInt64.self)
            a0 = Self.lane(a0, w0 ^ k0, w1 ^ k1, w1)
            a1 = Self.lane(a1, w2 ^ k2, w3 ^ k3, w3)
            a2 = Self.lane(a2, w4 ^ k4, w5 ^ k5, w5)
            a3 = Self.lane(a3, w6 ^ k6, w7 ^ k7, w7)
            offset += 64
        }
        let low = Self.avalanche(Self.fold(a0 ^ k8, a2 ^ k9) &+ a1.rotated(by: 32) ^ a3)
        let high = Self.avalanche(Self.fold(a1 ^ k9, a3 ^ k8) &+ a0.rotated(by: 32) ^ a2)
        if bits >= 128 { return PageHash(low: low, high: high) }
        return PageHash(low: bits == 0 ? 0 : low & (UInt64.max >> (64 - bits)), high: 0)
    }

    /// One lane step: fold the product of the keyed words, add the plain second word, rotate.
    @inline(__always)
    private static func lane(_ accumulator: UInt64, _ x: UInt64, _ y: UInt64, _ plain: UInt64) -> UInt64 {
        (accumulator &+ fold(x, y) &+ plain).rotated(by: 23)
    }

    /// The 128-bit product of `x` and `y`, its halves xored together.
    @inline(__always)
    private static func fold(_ x: UInt64, _ y: UInt64) -> UInt64 {
        let product = x.multipliedFullWidth(by: y)
        return product.high ^ product.low
    }

    /// Xor-shift-multiply: every input bit reaches every output bit.
    @inline(__always)
    private static func avalanche(_ value: UInt64) -> UInt64 {
        var x = value
        x = (x ^ (x >> 32)) &* 0xe7037_ed1a_0b42_8db
        x = (x ^ (x >> 29)) &* 0x8ebc_6af0_9c88_c6e3
        return x ^ (x >> 32)
    }
}

extension UInt64 {
    @inline(__always)
    fileprivate func rotated(by bits: UInt64) -> UInt64 { (self << bits) | (self >> (64 - bits)) }
}
