import CheckpointIO
import Foundation
import TensorKernels

/// A switch pack: everything needed to turn a base model into one task's model, at 1-3 % of the fine-tune's size.
///
/// Two kinds: T-Switch (the paper's method, the default: P-Discard mask, signs, one λ per tensor) and random-mask
/// (beyond the paper: DARE applied to one task vector, a seeded Bernoulli mask regenerated from `seed`, the kept τ
/// stored as values and rescaled by 1/(1−α) when applied).
public struct SwitchPack: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        /// T-Switch (Qi et al., CVPR 2025): mask S_A by P-Discard, signs S_P, one scale λ per tensor.
        case tSwitch = "t-switch"
        /// A seeded random mask keeping each entry with probability 1−α; kept τ stored, × 1/(1−α) when applied.
        case randomMask = "random-mask"
    }

    public var task: String
    public var kind: Kind = .tSwitch
    /// The pack seed of a random-mask pack (each tensor's mask seed derives from it and the tensor name); 0 for T-Switch.
    public var seed: UInt64 = 0
    public var baseFingerprint: BaseFingerprint
    public var dropRatio: Double
    public var tieRule: PDiscard.TieRule
    public var tensors: [TensorSwitch]
    /// The task's classification head (optional), never binarized.
    public var head: [DenseTensor]
    /// Class names, index = label.
    public var labels: [String]

    public init(
        task: String, baseFingerprint: BaseFingerprint, dropRatio: Double, tieRule: PDiscard.TieRule,
        tensors: [TensorSwitch], head: [DenseTensor] = [], labels: [String] = [], kind: Kind = .tSwitch,
        seed: UInt64 = 0
    ) {
        self.task = task
        self.kind = kind
        self.seed = seed
        self.baseFingerprint = baseFingerprint
        self.dropRatio = dropRatio
        self.tieRule = tieRule
        self.tensors = tensors
        self.head = head
        self.labels = labels
    }

    /// Parameters covered by the switches (kept or not).
    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }
    public var keptCount: Int { tensors.reduce(0) { $0 + $1.keptCount } }

    public func tensor(_ name: String) -> TensorSwitch? { tensors.first { $0.name == name } }
}

extension SwitchPack {
    /// Checks that this pack, applied with `weight`, fits a base: a finite weight, the base's fingerprint, every
    /// switched tensor present with the pack's shape and a float dtype, every index inside its tensor. Shared by
    /// `SwitchApplier` (a base on disk) and `SwitchableModel` (a base in memory).
    ///
    /// - Parameter lookup: a tensor's shape and, when its dtype is not a float type, that dtype's name; nil when the
    ///   base has no such tensor.
    func checkFits(
        weight: Float, fingerprint: BaseFingerprint, source: String, lookup: (String) -> ([Int], String?)?
    ) throws(SwitchError) {
        guard weight.isFinite else {
            throw SwitchError(.invalidWeight, "The weight of pack '\(task)' is \(weight); expected a finite number.")
        }
        guard baseFingerprint == fingerprint else {
            throw SwitchError(
                .wrongBase,
                "Pack '\(task)' was made for a base with fingerprint \(baseFingerprint), but \(source) has fingerprint \(fingerprint); use the base model the pack was made from."
            )
        }
        for t in tensors {
            guard let (shape, nonFloat) = lookup(t.name) else {
                throw SwitchError(
                    .missingTensor, "Pack '\(task)' switches tensor '\(t.name)', which \(source) does not have.")
            }
            guard shape == t.shape, nonFloat == nil else {
                let dtype = nonFloat.map { " (\($0))" } ?? ""
                throw SwitchError(
                    .shapeMismatch,
                    "Pack '\(task)' expects tensor '\(t.name)' of shape \(t.shape); \(source) has \(shape)\(dtype).")
            }
            guard t.positive.last.map({ Int($0) < t.elementCount }) ?? true,
                t.negative.last.map({ Int($0) < t.elementCount }) ?? true
            else {
                throw SwitchError(
                    .corruptPack,
                    "Pack '\(task)' has an entry of tensor '\(t.name)' outside its \(t.elementCount) elements.")
            }
        }
    }
}
