import CheckpointIO
import Evaluation
import Foundation
import TaskSwitches
import TensorKernels

/// The accuracy side of the paper's pulse-like experiment, in memory: a fine-tune's task vector τ is cut to a share
/// (1−α) of its entries by one of three strategies, optionally binarized, added back to the base, and the encoder
/// built from those weights is scored on a labelled test set. Nothing is written to disk.
///
/// Strategies (per tensor and per sign, as P-Discard): `discardLow` keeps the ⌊(1−α)n⌋ largest |τ| (T-Switch's
/// mask; ties kept in increasing index, as `PDiscard`), `discardHigh` keeps the ⌊(1−α)n⌋ smallest, `random` keeps
/// each entry with probability 1−α by the random-mask pack's seeded mask (`RandomMask`, seed derived from the
/// vector's seed and the tensor name), so a random-mask pack with f32 values reproduces it exactly.
///
/// Values: `nil` scale keeps the original τ of the kept entries (random ones rescaled by 1/(1−α), as DARE);
/// a scale replaces them by sign(τ)·λ (T-Switch's binarization) with λ computed over the kept entries:
/// `rms` is the paper's ‖kept‖₂/√k, `meanAbs` the L2-optimal Σ|kept|/k (BitDelta's choice), and the row variants
/// compute one λ per output row (first dimension) instead of per tensor.
public struct DropSweep: Sendable {
    public enum Strategy: String, Sendable, CaseIterable {
        case discardLow = "discard-low"
        case discardHigh = "discard-high"
        case random
    }

    public enum Scale: String, Sendable, CaseIterable {
        /// The paper's scaling knob: RMS of the kept entries, one per tensor.
        case rms
        /// Mean |τ| of the kept entries, one per tensor: minimizes Σ(τ − λ·sign τ)² over the kept entries.
        case meanAbs = "mean-abs"
        case rowRMS = "row-rms"
        case rowMeanAbs = "row-mean-abs"

        public var perRow: Bool { self == .rowRMS || self == .rowMeanAbs }
    }

    /// One point of the sweep.
    public struct Setting: Sendable, Hashable {
        public var strategy: Strategy
        public var dropRatio: Double
        /// nil: original values of the kept entries; else sign × λ with this scale.
        public var scale: Scale?

        public init(strategy: Strategy, dropRatio: Double, scale: Scale?) {
            self.strategy = strategy
            self.dropRatio = dropRatio
            self.scale = scale
        }

        public var valuesLabel: String { scale.map { "sign × λ (\($0.rawValue))" } ?? "original" }
    }

    /// What a setting keeps of one task vector, summed over its tensors.
    public struct Footprint: Sendable {
        public var parameters = 0
        public var kept = 0
        /// Σ over tensors of n·H(k/n) + k: the entropy floor of mask and signs, in bits.
        public var floorBits = 0.0
        /// Scales stored as F32: one per tensor, or one per row for the row variants.
        public var scaleCount = 0

        public init() {}
    }

    /// The task vector of one fine-tune, with each tensor's entries ordered for selection.
    public final class TaskVector: Sendable {
        struct Tensor: Sendable {
            let name: String
            let shape: [Int]
            let tau: [Float]
            /// Flat indices of positive entries by |τ| descending, ties by index ascending; same for negatives.
            let positive: [UInt32]
            let negative: [UInt32]
        }

        let tensors: [String: Tensor]
        public let seed: UInt64

        /// Reads every float tensor the encoder uses from both models.
        ///
        /// - Throws: `EvaluationError` `.checkpoint` for unreadable tensors, `.shapeMismatch` or `.missingTensor`
        ///   when the fine-tune lacks or reshapes a base tensor, `.invalidData` for a non-finite τ.
        public init(base: ModelFolder, fineTuned: ModelFolder, names: [String], seed: UInt64 = 0)
            throws(EvaluationError)
        {
            var out: [String: Tensor] = [:]
            for name in names {
                guard let info = base.info(name) else { continue }
                do {
                    _ = try counterpart(of: info, base: base, fineTuned: fineTuned)
                } catch {
                    throw EvaluationError(
                        error.code == .shapeMismatch ? .shapeMismatch : .missingTensor, error.message, cause: error)
                }
                let b: [Float]
                let f: [Float]
                do {
                    b = try base.tensor(name).floats()
                    f = try fineTuned.tensor(name).floats()
                } catch {
                    throw EvaluationError(.checkpoint, error.message, cause: error)
                }
                var tau = [Float](repeating: 0, count: b.count)
                var pos: [UInt32] = []
                var neg: [UInt32] = []
                for i in 0..<b.count {
                    let t = f[i] - b[i]
                    guard t.isFinite else {
                        throw EvaluationError(
                            .invalidData,
                            "\(fineTuned.path): tensor '\(name)' minus the base is NaN or infinite at flat index \(i).")
                    }
                    tau[i] = t
                    if t > 0 { pos.append(UInt32(i)) } else if t < 0 { neg.append(UInt32(i)) }
                }
                let order: (UInt32, UInt32) -> Bool = { a, c in
                    let x = abs(tau[Int(a)])
                    let y = abs(tau[Int(c)])
                    return x > y || (x == y && a < c)
                }
                pos.sort(by: order)
                neg.sort(by: order)
                out[name] = Tensor(name: name, shape: info.shape, tau: tau, positive: pos, negative: neg)
            }
            tensors = out
            self.seed = seed
        }

        /// base + the reconstructed τ of `name` under `setting`; nil when τ is not known for that tensor.
        /// `excluded` tensors keep the base values (not switched).
        func apply(
            _ setting: Setting, to base: [Float], name: String, footprint: inout Footprint
        ) -> [Float]? {
            guard let t = tensors[name] else { return nil }
            let n = t.tau.count
            let alpha = setting.dropRatio
            var kept: [UInt32] = []
            switch setting.strategy {
            case .discardLow:
                kept += t.positive.prefix(PDiscard.keepCount(t.positive.count, dropRatio: alpha))
                kept += t.negative.prefix(PDiscard.keepCount(t.negative.count, dropRatio: alpha))
            case .discardHigh:
                kept += t.positive.suffix(PDiscard.keepCount(t.positive.count, dropRatio: alpha))
                kept += t.negative.suffix(PDiscard.keepCount(t.negative.count, dropRatio: alpha))
            case .random:
                let mask =
                    alpha < 1
                    ? RandomMask.positions(
                        count: n, dropRatio: alpha, seed: RandomMask.tensorSeed(packSeed: seed, name: name)) ?? [] : []
                kept = mask.filter { t.tau[Int($0)] != 0 }
            }
            footprint.parameters += n
            footprint.kept += kept.count
            if n > 0 {
                let d = Double(kept.count) / Double(n)
                let h = d <= 0 || d >= 1 ? 0 : -(d * log2(d) + (1 - d) * log2(1 - d))
                footprint.floorBits += Double(n) * h + Double(kept.count)
            }
            var out = base
            guard let scale = setting.scale else {
                let factor: Float = setting.strategy == .random && alpha < 1 ? Float(1 / (1 - alpha)) : 1
                for i in kept { out[Int(i)] += factor * t.tau[Int(i)] }
                return out
            }
            let rows = scale.perRow && t.shape.count >= 2 ? t.shape[0] : 1
            let rowLength = n / max(1, rows)
            var sum = [Double](repeating: 0, count: rows)
            var count = [Int](repeating: 0, count: rows)
            for i in kept {
                let v = Double(t.tau[Int(i)])
                let r = Int(i) / rowLength
                sum[r] += scale == .rms || scale == .rowRMS ? v * v : abs(v)
                count[r] += 1
            }
            let lambda: [Float] = (0..<rows).map { r in
                guard count[r] > 0 else { return 0 }
                let m = sum[r] / Double(count[r])
                return Float(scale == .rms || scale == .rowRMS ? m.squareRoot() : m)
            }
            footprint.scaleCount += rows
            for i in kept {
                let v = t.tau[Int(i)]
                out[Int(i)] += v > 0 ? lambda[Int(i) / rowLength] : -lambda[Int(i) / rowLength]
            }
            return out
        }
    }

    public let base: ModelFolder
    public let config: BertConfig
    public let tokenizer: any TextTokenizer
    let loader: EncoderLoader
    let baseTensors: [String: (shape: [Int], values: [Float])]

    /// Loads the base model folder (weights, `config.json`, tokenizer) once; every setting starts from it.
    public init(basePath: String) throws(EvaluationError) {
        do {
            base = try ModelFolder(path: basePath)
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        loader = try EncoderLoader(folder: base)
        config = loader.config
        tokenizer = loader.tokenizer
        var tensors: [String: (shape: [Int], values: [Float])] = [:]
        for name in loader.tensorNames where base.contains(loader.checkpointName(name)) {
            do {
                let view = try base.tensor(loader.checkpointName(name))
                tensors[name] = (view.shape, try view.floats())
            } catch {
                throw EvaluationError(.checkpoint, error.message, cause: error)
            }
        }
        baseTensors = tensors
    }

    /// The task vector of `fineTunedPath` over this base, for the encoder's tensors minus `excluded` (unprefixed
    /// names; an excluded tensor keeps the base values in every setting).
    public func taskVector(fineTunedPath: String, excluding excluded: Set<String> = [], seed: UInt64 = 0)
        throws(EvaluationError)
        -> TaskVector
    {
        let fineTuned: ModelFolder
        do {
            fineTuned = try ModelFolder(path: fineTunedPath)
        } catch {
            throw EvaluationError(.checkpoint, error.message, cause: error)
        }
        let names = loader.tensorNames.filter { !excluded.contains($0) }.map(loader.checkpointName)
        return try TaskVector(base: base, fineTuned: fineTuned, names: names, seed: seed)
    }

    /// An encoder over base + the task vector reconstructed under `setting` (nil setting: the base itself).
    public func encoder(_ vector: TaskVector?, setting: Setting?) throws(EvaluationError) -> (
        SentenceEncoder, Footprint
    ) {
        var footprint = Footprint()
        let loader = loader
        let encoder = try loader.encoder(source: base.path) { name in
            guard let b = baseTensors[name] else { return nil }
            guard let vector, let setting else { return b }
            guard
                let values = vector.apply(
                    setting, to: b.values, name: loader.checkpointName(name), footprint: &footprint)
            else {
                footprint.parameters += b.values.count  // excluded: counted, nothing kept
                return b
            }
            return (b.shape, values)
        }
        return (SentenceEncoder(tokenizer: tokenizer, encoder: encoder), footprint)
    }

    /// Evenly spaced subset of `count` items of `n` (all when `count` ≥ n): deterministic and spread over the file,
    /// which may be ordered by label.
    public static func subsample(_ n: Int, limit: Int?) -> [Int] {
        guard let limit, limit < n else { return Array(0..<n) }
        return (0..<limit).map { $0 * n / limit }
    }
}
