import CheckpointIO
import Foundation
import TensorKernels

/// A base model resident in memory as `Float`, switched between tasks in place.
///
/// `activate` restores the base and adds a weighted set of switches (θ + Σ w_k λ_k S_A^k ⊙ S_P^k, packs added in
/// the order given); only the kept entries are touched. Before each pack is added, the values it is about to change
/// are saved, and restoring writes them back in reverse order, so after `reset()` every weight is bit-identical to
/// the base — no re-read of the checkpoint and no second copy of the model.
///
/// A switch from one set of packs to another is done tensor by tensor, restoring and re-applying each tensor in
/// one step; per tensor, a scatter over the kept entries or a tiled sweep over the tensor is chosen by how many
/// entries it touches (`WeightStore`), with the same result bit for bit.
///
/// All access goes through one lock: switching and reading weights are serialized, so a reader never sees a
/// half-applied pack. Share one instance between tasks; callers that each need their own mix use
/// `withActivated(_:_:)`, which applies, runs the caller's body and switches back as one locked step. (`@unchecked Sendable`: the mutable state below is only
/// touched while `lock` is held; a `Mutex<State>` cannot lend its buffers to a caller's closure under Swift 6's
/// region checks.)
public final class SwitchableModel: @unchecked Sendable {
    public let fingerprint: BaseFingerprint
    /// Names, shapes and base dtypes of the resident tensors, in storage order.
    public let specs: [TensorSpec]
    public let source: String
    private let lock = NSLock()
    /// Tensor name → position in `specs`.
    private let index: [String: Int]
    private var state: State

    /// How tensors are switched: by the measured per-tensor rule, or always one loop (benchmarks and tests).
    public enum Strategy: Sendable { case automatic, scatter, sweep }

    /// The weight buffers and the undo log; only touched under the lock.
    private struct State {
        var weights: WeightStore
        /// Per tensor, the undo entries of the applied packs in application order.
        var undo: [Int: [WeightStore.Undo]] = [:]
        var active: [(task: String, weight: Float)] = []
        /// Per tensor, the switches applied now (what a transaction switches back to).
        var applied: [Int: [(TensorSwitch, Float)]] = [:]
    }

    /// Loads every float tensor of `base` as `Float` (other tensors are not switchable and not held).
    public init(base: ModelFolder) throws(SwitchError) {
        fingerprint = try BaseFingerprint(model: base)
        source = base.path
        let infos = base.tensorInfos.filter { $0.dtype.isConvertibleFloat }
        specs = infos.map { TensorSpec(name: $0.name, dtype: $0.dtype, shape: $0.shape) }
        let store = WeightStore(specs: specs)
        for (i, info) in infos.enumerated() {
            let view = try io { () throws(CheckpointError) in try base.tensor(info.name) }
            try io { () throws(CheckpointError) in try view.copyFloats(into: store.buffers[i]) }
        }
        state = State(weights: store)
        index = Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, $0) })
    }

    /// Holds in-memory tensors (generated models, benchmarks); `fingerprint` is what packs must carry to apply.
    public init(tensors: [(spec: TensorSpec, values: [Float])], fingerprint: BaseFingerprint, source: String = "memory")
    {
        self.fingerprint = fingerprint
        self.source = source
        specs = tensors.map(\.spec)
        let store = WeightStore(specs: specs)
        for (i, t) in tensors.enumerated() {
            precondition(t.values.count == t.spec.elementCount, "tensor '\(t.spec.name)' has the wrong element count")
            _ = store.buffers[i].update(fromContentsOf: t.values)
        }
        state = State(weights: store)
        index = Dictionary(uniqueKeysWithValues: specs.enumerated().map { ($1.name, $0) })
    }

    /// Tasks and weights currently applied, in application order.
    public var active: [(task: String, weight: Float)] { lock.withLock { state.active } }

    /// Restores the base, then applies `packs` with their weights.
    ///
    /// Everything is checked (fingerprint, names, shapes, finite weights) before any weight changes, so a failure
    /// leaves the model as it was.
    public func activate(_ packs: [(pack: SwitchPack, weight: Float)], strategy: Strategy = .automatic)
        throws(SwitchError)
    {
        let byTensor = try switchesByTensor(packs)
        lock.withLock {
            Self.transition(&state, to: byTensor, strategy: strategy)
            state.active = packs.map { ($0.pack.task, $0.weight) }
        }
    }

    /// Applies one pack with weight 1 (T-Switch with the task known).
    public func activate(_ pack: SwitchPack, strategy: Strategy = .automatic) throws(SwitchError) {
        try activate([(pack, 1)], strategy: strategy)
    }

    /// Restores the base weights exactly.
    public func reset(strategy: Strategy = .automatic) {
        lock.withLock {
            Self.transition(&state, to: [:], strategy: strategy)
            state.active = []
        }
    }

    /// The resident tensors as a transaction sees them: read-only, valid only inside the `withActivated` body that
    /// lends it (non-copyable, so it cannot be stored or returned; do not keep the pointers it hands out either).
    public struct Weights: ~Copyable {
        fileprivate let buffers: [UnsafeMutableBufferPointer<Float>]
        fileprivate let index: [String: Int]
        public let specs: [TensorSpec]

        /// A tensor's switched values, or nil when the model holds no tensor of that name.
        public func tensor(_ name: String) -> UnsafeBufferPointer<Float>? {
            index[name].map { UnsafeBufferPointer(buffers[$0]) }
        }
        /// Every tensor's switched values, in `specs` order.
        public var all: [UnsafeBufferPointer<Float>] { buffers.map { UnsafeBufferPointer($0) } }
    }

    /// Runs `body` with `packs` applied and the model switched back afterwards, as one serialized step: concurrent
    /// transactions with different mixes queue, and none sees another's weights. After the body returns (or
    /// throws), the weights are bit for bit what they were before (the base, or what `activate` left).
    ///
    /// The body runs under the model's lock: it must not call back into this model (`activate`, `withTensor`, …).
    ///
    /// - Throws: `SwitchError` when a pack does not fit (checked before any weight changes), or what `body` throws.
    public func withActivated<R>(
        _ packs: [(pack: SwitchPack, weight: Float)], strategy: Strategy = .automatic,
        _ body: (borrowing Weights) throws -> R
    ) throws -> R {
        let byTensor = try switchesByTensor(packs)
        lock.lock()
        defer { lock.unlock() }
        let before = state.applied
        Self.transition(&state, to: byTensor, strategy: strategy)
        defer { Self.transition(&state, to: before, strategy: strategy) }
        return try body(Weights(buffers: state.weights.buffers, index: index, specs: specs))
    }

    /// Runs `body` over the base with `mixes` ready to be read group by group (`MixedSwitches`): a batch in which
    /// example groups see different weighted sets of packs at once. The resident weights stay the base while the
    /// body runs (whatever `activate` left is switched back afterwards), under the model's lock like
    /// `withActivated`, so concurrent callers take turns and never see each other's mixes.
    ///
    /// An empty mix is the base alone. The body must not call back into this model.
    ///
    /// - Throws: `SwitchError` when a pack of any mix does not fit (checked before any weight changes), or what
    ///   `body` throws.
    public func withMixes<R>(
        _ mixes: [[(pack: SwitchPack, weight: Float)]], _ body: (MixedSwitches) throws -> R
    ) throws -> R {
        var plans: [[Int: [(TensorSwitch, Float)]]] = []
        for mix in mixes { plans.append(try switchesByTensor(mix)) }
        lock.lock()
        defer { lock.unlock() }
        let before = state.applied
        Self.transition(&state, to: [:], strategy: .automatic)
        defer { Self.transition(&state, to: before, strategy: .automatic) }
        let base = state.weights.buffers.map { UnsafeBufferPointer($0) }
        return try body(MixedSwitches(base: base, index: index, specs: specs, mixes: plans))
    }

    /// Runs `body` with a tensor's current values (under the lock: keep it short).
    public func withTensor<R>(_ name: String, _ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R? {
        guard let i = specs.firstIndex(where: { $0.name == name }) else { return nil }
        lock.lock()
        defer { lock.unlock() }
        return try body(UnsafeBufferPointer(state.weights.buffers[i]))
    }

    /// Runs `body` with every tensor's current values, in `specs` order, under the lock.
    public func withWeights<R>(_ body: ([UnsafeBufferPointer<Float>]) throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(state.weights.buffers.map { UnsafeBufferPointer($0) })
    }

    /// Entries a switch set touches (for benchmarks: each is read, saved, written).
    public static func touchedEntries(_ packs: [SwitchPack]) -> Int { packs.reduce(0) { $0 + $1.keptCount } }

    // MARK: Private

    private func switchesByTensor(_ packs: [(pack: SwitchPack, weight: Float)]) throws(SwitchError)
        -> [Int: [(TensorSwitch, Float)]]
    {
        let plans = try plan(packs)
        var byTensor: [Int: [(TensorSwitch, Float)]] = [:]
        for (p, entry) in packs.enumerated() {
            for (tIndex, k) in plans[p] { byTensor[tIndex, default: []].append((entry.pack.tensors[k], entry.weight)) }
        }
        return byTensor
    }

    private func plan(_ packs: [(pack: SwitchPack, weight: Float)]) throws(SwitchError) -> [[(Int, Int)]] {
        var plans: [[(Int, Int)]] = []
        for (pack, weight) in packs {
            try pack.checkFits(weight: weight, fingerprint: fingerprint, source: source) { name in
                index[name].map { (specs[$0].shape, nil) }
            }
            // checkFits proved every name is in `index`.
            let p = pack.tensors.enumerated().compactMap { k, t in index[t.name].map { ($0, k) } }
            plans.append(p)
        }
        return plans
    }

    /// Every tensor that has packs applied or is about to: restored and re-applied in one transition each.
    private static func transition(_ s: inout State, to target: [Int: [(TensorSwitch, Float)]], strategy: Strategy) {
        let tensors = Set(s.undo.keys).union(target.keys).sorted()
        let forced: WeightStore.Path? =
            switch strategy {
            case .automatic: nil
            case .scatter: .scatter
            case .sweep: .sweep
            }
        var next: [Int: [WeightStore.Undo]] = [:]
        for t in tensors {
            // Taken out of the log first, so each tensor's old saved values are freed as soon as it is switched.
            let old = s.undo.removeValue(forKey: t) ?? []
            let undo = s.weights.transition(tensor: t, undo: old, switches: target[t] ?? [], path: forced)
            if !undo.isEmpty { next[t] = undo }
        }
        s.undo = next
        s.applied = target
    }
}
