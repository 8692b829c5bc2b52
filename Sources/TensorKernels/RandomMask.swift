import Foundation

/// A seeded Bernoulli(1−α) mask over n entries, generated in O(kept) by geometric gaps, so a pack stores only a
/// seed and the kept values (the random-mask pack kind, the in-memory random strategy of the drop sweep).
///
/// The algorithm is specified bit for bit in docs/pack-format.md ("The random mask") so that another
/// implementation reproduces it; `scripts/fixtures/random_mask.py` is an independent numpy version.
public enum RandomMask {
    /// The seed of one tensor's mask: the first output of SplitMix64 keyed by the pack seed and the tensor name
    /// (`SplitMix64(seed:key:stream:)` with stream 0), so every tensor of a pack gets its own mask.
    public static func tensorSeed(packSeed: UInt64, name: String) -> UInt64 {
        var g = SplitMix64(seed: packSeed, key: name, stream: 0)
        return g.next()
    }

    /// Ascending flat indices of the kept entries of an `count`-entry tensor: each entry kept independently with
    /// probability 1 − `dropRatio`.
    ///
    /// From SplitMix64(seed), each draw u = ((x >> 11) + 1) · 2⁻⁵³ ∈ (0, 1] gives the gap g = ⌊ln u / ln α⌋ (the
    /// number of dropped entries before the next kept one, geometric with success probability 1 − α); the next
    /// kept index is the previous one + 1 + g (the first: g), until it passes the end. α = 0 keeps every entry.
    ///
    /// - Parameter limit: stop and return nil once more than this many entries are kept (a decoder checking a
    ///   recorded count never allocates past it).
    /// - Precondition: 0 ≤ dropRatio < 1 and count ≤ 2³² (indices are UInt32).
    public static func positions(count: Int, dropRatio: Double, seed: UInt64, limit: Int = .max) -> [UInt32]? {
        precondition(dropRatio >= 0 && dropRatio < 1 && count >= 0 && count <= 1 << 32, "bad random-mask arguments")
        var out: [UInt32] = []
        out.reserveCapacity(min(limit, Int(Double(count) * (1 - dropRatio) * 1.01) + 16))
        if dropRatio == 0 {
            guard count <= limit else { return nil }
            return (0..<count).map { UInt32($0) }
        }
        var rng = SplitMix64(seed: seed)
        let logAlpha = log(dropRatio)
        var next = 0  // the first index the next gap starts from
        while next < count {
            let u = Double((rng.next() >> 11) + 1) * 0x1p-53
            let gap = (log(u) / logAlpha).rounded(.down)
            // Compared as Double first: a gap can exceed Int's range when u is tiny and α is small.
            guard gap < Double(count - next) else { break }
            guard out.count < limit else { return nil }
            let i = next + Int(gap)
            out.append(UInt32(i))
            next = i + 1
        }
        return out
    }
}
