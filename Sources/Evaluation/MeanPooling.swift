/// The sentence feature of sentence-transformers' mean-pooling models: the mean of the last hidden state over a
/// text's real tokens (special tokens included, padding excluded), optionally scaled to unit L2 length.
public struct MeanPooling: Sendable, Equatable {
    public var normalize: Bool

    public init(normalize: Bool = false) {
        self.normalize = normalize
    }

    /// One pooled row per sequence, `states.count × hiddenSize` row-major; an empty sequence pools to zeros.
    public func pool(_ states: HiddenStates) -> [Float] {
        let h = states.hiddenSize
        let hidden = states.values
        var pooled = [Float](repeating: 0, count: states.count * h)
        for b in 0..<states.count where states.lengths[b] > 0 {
            let inv = 1 / Float(states.lengths[b])
            for r in states.starts[b]..<(states.starts[b] + states.lengths[b]) {
                for j in 0..<h { pooled[b * h + j] += hidden[r * h + j] }
            }
            for j in 0..<h { pooled[b * h + j] *= inv }
        }
        if normalize { Self.normalizeRows(&pooled, width: h) }
        return pooled
    }

    /// Scales each `width`-wide row of `rows` to unit L2 length (a zero row stays zero).
    public static func normalizeRows(_ rows: inout [Float], width h: Int) {
        for b in 0..<(rows.count / max(1, h)) {
            var sq: Float = 0
            for j in 0..<h { sq += rows[b * h + j] * rows[b * h + j] }
            let norm = max(sq.squareRoot(), 1e-12)
            for j in 0..<h { rows[b * h + j] /= norm }
        }
    }
}
