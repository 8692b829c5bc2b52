import CheckpointIO
import Foundation
import Synchronization
import TensorKernels

/// The switch of one tensor: kept entries (mask S_A) split by sign (S_P), and the scale λ.
///
/// Reconstruction adds `weight · λ` at every positive index and subtracts it at every negative one. A random-mask
/// switch (`values` set) instead adds `weight · λ · values[j]` at `positive[j]`, with λ = 1/(1−α) and `negative`
/// empty; `positive` then lists the kept entries whose stored value is not zero.
public struct TensorSwitch: Sendable, Equatable {
    public let name: String
    public let shape: [Int]
    /// The dtype the tensor has in the base model (applied weights are written back in it by default).
    public let baseDType: DType
    public let lambda: Float
    /// What the switch adds where: the one description every apply path reads (`SwitchApplier.add`).
    public let payload: Payload
    /// The payload as bit masks, built on first mixed use and shared by every copy of this switch.
    let maskCache = MaskCache()

    /// The two kinds of switch.
    public enum Payload: Sendable, Equatable {
        /// T-Switch: `+λ` at every `positive` index (kept entries with τ > 0), `−λ` at every `negative` one
        /// (τ < 0); both ascending flat (row-major) indices.
        case signs(positive: [UInt32], negative: [UInt32])
        /// Random mask: `λ · values.values[j]` at `indices[j]`, the ascending kept entries whose stored value is
        /// not zero.
        case values(indices: [UInt32], KeptValues)
    }

    /// Ascending flat (row-major) indices of kept entries with τ > 0 (random mask: every kept entry).
    public var positive: [UInt32] {
        switch payload {
        case .signs(let p, _): p
        case .values(let i, _): i
        }
    }
    /// Ascending flat indices of kept entries with τ < 0 (random mask: none).
    public var negative: [UInt32] {
        switch payload {
        case .signs(_, let n): n
        case .values: []
        }
    }
    /// The stored τ of a random-mask switch, one per `positive` index; nil for a T-Switch.
    public var values: KeptValues? {
        switch payload {
        case .signs: nil
        case .values(_, let v): v
        }
    }

    /// - Precondition: `positive` and `negative` are strictly ascending (as P-Discard and the pack decoder make
    ///   them): the switching loops rely on it to touch each entry once and to walk tensors in order. With
    ///   `values` (a random-mask switch), `negative` is empty and there is one value per `positive` index.
    public init(
        name: String, shape: [Int], baseDType: DType, lambda: Float, positive: [UInt32], negative: [UInt32],
        values: KeptValues? = nil
    ) {
        precondition(
            Self.strictlyAscending(positive) && Self.strictlyAscending(negative),
            "indices of '\(name)' are not strictly ascending")
        precondition(
            values.map { $0.values.count == positive.count && negative.isEmpty } ?? true,
            "the values of '\(name)' do not match its kept entries")
        payload = values.map { .values(indices: positive, $0) } ?? .signs(positive: positive, negative: negative)
        self.name = name
        self.shape = shape
        self.baseDType = baseDType
        self.lambda = lambda
    }

    static func strictlyAscending(_ a: [UInt32]) -> Bool {
        a.withUnsafeBufferPointer { b in
            for i in b.indices.dropFirst() where b[i - 1] >= b[i] { return false }
            return true
        }
    }

    /// The lists as bit masks (`SwitchMasks`, in `MixedSwitches`' list order: positive then negative, or the
    /// random mask's indices with their values), built on the first call and kept with the switch.
    public var masks: SwitchMasks {
        maskCache.masks {
            switch payload {
            case .signs(let p, let n):
                SwitchMasks(lists: [(p, nil), (n, nil)], count: elementCount)
            case .values(let i, let v):
                SwitchMasks(lists: [(i, v.values)], count: elementCount)
            }
        }
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var keptCount: Int {
        switch payload {
        case .signs(let p, let n): p.count + n.count
        case .values(let i, _): i.count
        }
    }
    public var density: Double { elementCount == 0 ? 0 : Double(keptCount) / Double(elementCount) }

    /// The coder's rows × cols view: cols is the last dimension, a scalar or vector is one row.
    package var rowsCols: (rows: Int, cols: Int) {
        guard let last = shape.last, last > 0 else { return (elementCount > 0 ? 1 : 0, max(1, elementCount)) }
        return (elementCount / last, last)
    }
}

/// Where a switch keeps its bit masks once built: a cache, not part of the switch's value, so two switches with
/// the same lists are equal whether or not either has built them.
final class MaskCache: Sendable, Equatable {
    private let state = Mutex<SwitchMasks?>(nil)

    /// The masks, built by `make` on the first call (under the lock, so concurrent first callers build once).
    func masks(_ make: () -> SwitchMasks) -> SwitchMasks {
        state.withLock { cached in
            if let m = cached { return m }
            let m = make()
            cached = m
            return m
        }
    }

    static func == (_: MaskCache, _: MaskCache) -> Bool { true }
}
