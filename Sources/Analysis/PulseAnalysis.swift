import CheckpointIO
import TaskSwitches
import TensorKernels

/// The weight-statistics side of the paper's pulse-like experiment: how much of a task vector survives as the drop
/// ratio α grows, when discarding the smallest entries (P-Discard), the largest, or random ones.
///
/// Per tensor and per sign (as P-Discard does), the kept count is ⌊(1−α)·n⌋ for the low and high strategies; the
/// random strategy keeps each entry with probability 1−α (one uniform draw per entry, shared by all α, seeded).
/// Kept |τ| mass and kept L2 energy (Σ τ²) are summed over all tensors and reported as shares of the totals.
public struct PulseAnalysis: Sendable {
    public enum Strategy: String, Sendable, CaseIterable {
        case discardLow = "discard-low"
        case discardHigh = "discard-high"
        case random
    }

    public struct Point: Sendable {
        public let dropRatio: Double
        /// Share of Σ|τ| kept, per strategy.
        public let mass: [Strategy: Double]
        /// Share of Σ τ² kept, per strategy.
        public let energy: [Strategy: Double]
    }

    public let dropRatios: [Double]
    public let points: [Point]
    public let parameters: Int
    public let tensors: Int

    /// k/20 (not k·0.05, which gives 0.7000000000000001 and shifts ⌊(1−α)n⌋ by one for some n).
    public static let defaultDropRatios: [Double] = (0..<20).map { Double($0) / 20 } + [0.97, 0.99]

    /// Runs the analysis over every float tensor the two models share.
    public init(
        base: ModelFolder, fineTuned: ModelFolder, dropRatios: [Double] = PulseAnalysis.defaultDropRatios,
        seed: UInt64 = 0, progress: ((Int, Int) -> Void)? = nil
    ) throws(SwitchError) {
        for a in dropRatios { try SwitchPack.validate(dropRatio: a) }
        self.dropRatios = dropRatios
        let m = dropRatios.count
        var mass = [[Double]](repeating: [Double](repeating: 0, count: m), count: 3)
        var energy = mass
        var totalMass = 0.0
        var totalEnergy = 0.0
        var params = 0
        var tensors = 0
        let infos = base.tensorInfos.filter { $0.dtype.isConvertibleFloat }
        for (k, info) in infos.enumerated() {
            _ = try counterpart(of: info, base: base, fineTuned: fineTuned)
            let b = try io { () throws(CheckpointError) in try base.tensor(info.name).floats() }
            let f = try io { () throws(CheckpointError) in try fineTuned.tensor(info.name).floats() }
            var pos: [Float] = []
            var neg: [Float] = []
            for i in 0..<b.count {
                let t = f[i] - b[i]
                guard t.isFinite else {
                    throw SwitchError(
                        .nonFiniteValue,
                        "\(fineTuned.path): tensor '\(info.name)' minus the base is NaN or infinite at flat index \(i)."
                    )
                }
                if t > 0 { pos.append(t) } else if t < 0 { neg.append(-t) }
            }
            params += b.count
            if pos.isEmpty && neg.isEmpty { continue }
            tensors += 1
            var rng = SplitMix64(seed: seed &+ UInt64(k) &* 0x9E37_79B9_7F4A_7C15)
            for values in [pos, neg] where !values.isEmpty {
                let sorted = values.sorted(by: >)
                var pm = [0.0]
                var pe = [0.0]
                pm.reserveCapacity(sorted.count + 1)
                pe.reserveCapacity(sorted.count + 1)
                for v in sorted {
                    pm.append(pm[pm.count - 1] + Double(v))
                    pe.append(pe[pe.count - 1] + Double(v) * Double(v))
                }
                let n = sorted.count
                totalMass += pm[n]
                totalEnergy += pe[n]
                // Random: entry kept at α iff its draw u ≥ α; bucket each entry by the largest α it survives.
                var bucketMass = [Double](repeating: 0, count: m)
                var bucketEnergy = [Double](repeating: 0, count: m)
                for v in values {
                    let u = rng.nextUnit()
                    // Count of grid ratios ≤ u: the entry is kept for dropRatios[0..<j].
                    var j = 0
                    while j < m && dropRatios[j] <= u { j += 1 }
                    if j > 0 {
                        bucketMass[j - 1] += Double(v)
                        bucketEnergy[j - 1] += Double(v) * Double(v)
                    }
                }
                var sm = 0.0
                var se = 0.0
                for j in stride(from: m - 1, through: 0, by: -1) {
                    sm += bucketMass[j]
                    se += bucketEnergy[j]
                    mass[2][j] += sm
                    energy[2][j] += se
                }
                for (j, a) in dropRatios.enumerated() {
                    let keep = PDiscard.keepCount(n, dropRatio: a)
                    mass[0][j] += pm[keep]
                    energy[0][j] += pe[keep]
                    mass[1][j] += pm[n] - pm[n - keep]
                    energy[1][j] += pe[n] - pe[n - keep]
                }
            }
            progress?(k + 1, infos.count)
        }
        guard totalMass > 0 else {
            throw SwitchError(
                .emptyTaskVector,
                "\(fineTuned.path): the task vector over \(base.path) is zero in every float tensor; there is nothing to analyze."
            )
        }
        points = dropRatios.enumerated().map { j, a in
            Point(
                dropRatio: a,
                mass: [
                    .discardLow: mass[0][j] / totalMass, .discardHigh: mass[1][j] / totalMass,
                    .random: mass[2][j] / totalMass,
                ],
                energy: [
                    .discardLow: energy[0][j] / totalEnergy, .discardHigh: energy[1][j] / totalEnergy,
                    .random: energy[2][j] / totalEnergy,
                ])
        }
        parameters = params
        self.tensors = tensors
    }
}
