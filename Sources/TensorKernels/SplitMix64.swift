/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, statistically solid for dropout masks; seeded per tensor.
/// Shared by the randomised merge methods (DARE, DELLA) and the random baseline of the pulse analysis.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// Mixes the run seed, a key (tensor name, FNV-1a) and a stream number into an independent generator.
    public init(seed: UInt64, key: String, stream: UInt64) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        var s = SplitMix64(seed: seed ^ 0x9E37_79B9_7F4A_7C15)
        state = s.next() ^ h
        state = s.next() ^ (state &* 0xBF58_476D_1CE4_E5B9) ^ (stream &* 0x94D0_49BB_1331_11EB)
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform Double in [0, 1) from the top 53 bits.
    @inline(__always)
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// A uniform Float in [0, 1) from the top 24 bits.
    @inline(__always)
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * 0x1p-24 }
}
