import CheckpointIO
import Foundation
import TensorKernels

extension SwitchPack {
    /// Checks a drop ratio: 0 ≤ α < 1 (α = 1 would keep nothing).
    public static func validate(dropRatio: Double) throws(SwitchError) {
        guard dropRatio.isFinite, dropRatio >= 0, dropRatio < 1 else {
            throw SwitchError(
                .invalidDropRatio,
                "The drop ratio must be at least 0 and below 1 (0.7 drops 70 % of each sign); got \(dropRatio).")
        }
    }

    /// Builds the pack of `fineTuned` over `base` by P-Discard with drop ratio `dropRatio`.
    ///
    /// Every float tensor of the base is compared with the fine-tune's tensor of the same name: tensors with τ = 0
    /// (or nothing kept) are skipped; 0-dim tensors are carried exactly (one kept entry with λ = |τ|). Non-float
    /// tensors (e.g. `position_ids`) must be equal when the fine-tune has them. Tensors only the fine-tune has are ignored (a classification
    /// head is passed as `head`).
    ///
    /// - Throws: `SwitchError` naming the file and tensor for a missing tensor, a shape mismatch, NaN/∞ in τ, a bad
    ///   drop ratio, or a task vector that is zero everywhere.
    public static func build(
        base: ModelFolder, fineTuned: ModelFolder, dropRatio: Double, task: String,
        tieRule: PDiscard.TieRule = .lowestIndex, head: [DenseTensor] = [], labels: [String] = [],
        randomMask: RandomMaskSettings? = nil, progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws(SwitchError) -> SwitchPack {
        try validate(dropRatio: dropRatio)
        let fingerprint = try BaseFingerprint(model: base)
        let infos = base.tensorInfos
        // Check names, shapes and dtypes before any arithmetic, so a mismatch fails fast.
        for info in infos {
            // Non-float buffers (e.g. BERT's `position_ids`) are not switched; fine-tunes often omit them.
            if !info.dtype.isConvertibleFloat && fineTuned.info(info.name) == nil { continue }
            let other = try counterpart(of: info, base: base, fineTuned: fineTuned)
            if !info.dtype.isConvertibleFloat || !other.dtype.isConvertibleFloat {
                let a = try io { () throws(CheckpointError) in try base.tensor(info.name) }
                let b = try io { () throws(CheckpointError) in try fineTuned.tensor(info.name) }
                guard a.dtype == b.dtype, a.bytes.elementsEqual(b.bytes) else {
                    throw SwitchError(
                        .unsupportedTensor,
                        "\(fineTuned.path): tensor '\(info.name)' is \(other.dtype.rawValue) and differs from the base; only float tensors can be switched."
                    )
                }
            }
        }
        let work = infos.filter { $0.dtype.isConvertibleFloat }
        return try build(
            base: base, fingerprint: fingerprint, work: work, sourcePath: fineTuned.path, dropRatio: dropRatio,
            task: task, tieRule: tieRule, head: head, labels: labels, randomMask: randomMask, progress: progress
        ) { info throws(SwitchError) in
            try io { () throws(CheckpointError) in try fineTuned.tensor(info.name).floats() }
        }
    }

    /// Builds the pack of a PEFT LoRA adapter over `base` by P-Discard with drop ratio `dropRatio`.
    ///
    /// The task vector of an adapted tensor is what merging the adapter changes, `merged − base` in Float with the
    /// merge rounded as PEFT's `merge_and_unload()` rounds it (see `LoRAAdapterFolder+Merge.swift`), so the pack
    /// equals the pack of the merged model. Tensors the adapter does not touch have τ = 0 and no switch;
    /// `modules_to_save` tensors are full replacements, packed like any fine-tuned tensor.
    ///
    /// - Throws: `SwitchError` naming the adapter and tensor when it targets a tensor the base lacks or has another
    ///   shape, and `.emptyTaskVector` when the adapter changes nothing (e.g. an untrained adapter, B = 0).
    public static func build(
        base: ModelFolder, adapter: LoRAAdapterFolder, dropRatio: Double, task: String,
        tieRule: PDiscard.TieRule = .lowestIndex, head: [DenseTensor] = [], labels: [String] = [],
        randomMask: RandomMaskSettings? = nil, progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws(SwitchError) -> SwitchPack {
        try validate(dropRatio: dropRatio)
        let fingerprint = try BaseFingerprint(model: base)
        do throws(CheckpointError) { try adapter.check(against: base) } catch {
            let code: SwitchError.Code =
                switch error.code {
                case .tensorNotFound: .missingTensor
                case .modelMismatch: .shapeMismatch
                default: .checkpoint
                }
            throw SwitchError(code, error.message, cause: error)
        }
        let work = base.tensorInfos.filter { adapter.updates[$0.name] != nil }
        return try build(
            base: base, fingerprint: fingerprint, work: work, sourcePath: adapter.path, dropRatio: dropRatio,
            task: task, tieRule: tieRule, head: head, labels: labels, randomMask: randomMask, progress: progress
        ) { info throws(SwitchError) in
            try io { () throws(CheckpointError) in
                let w = try base.tensor(info.name).floats()
                return try adapter.merged(info.name, base: w, dtype: info.dtype) ?? w
            }
        }
    }

    /// P-Discard (or the random mask) over `work` (float tensors of `base`) in parallel; `tuned` gives a tensor's
    /// fine-tuned values.
    private static func build(
        base: ModelFolder, fingerprint: BaseFingerprint, work: [TensorInfo], sourcePath: String, dropRatio: Double,
        task: String, tieRule: PDiscard.TieRule, head: [DenseTensor], labels: [String],
        randomMask: RandomMaskSettings?,
        progress: (@Sendable (Int, Int) -> Void)?, tuned: @Sendable (TensorInfo) throws(SwitchError) -> [Float]
    ) throws(SwitchError) -> SwitchPack {
        var results = [Result<TensorSwitch?, SwitchError>](repeating: .success(nil), count: work.count)
        let done = Counter()
        results.withUnsafeMutableBufferPointer { rb in
            let R = UncheckedSendable(rb)
            Parallel.forEachChunk(work.count, minChunk: 1) { chunk in
                for t in chunk {
                    R.value[t] = Result { () throws(SwitchError) in
                        if let randomMask {
                            return try randomSwitchOf(
                                work[t], tuned: tuned(work[t]), base: base, sourcePath: sourcePath,
                                dropRatio: dropRatio, settings: randomMask)
                        }
                        return try switchOf(
                            work[t], tuned: tuned(work[t]), base: base, sourcePath: sourcePath, dropRatio: dropRatio,
                            tieRule: tieRule)
                    }
                    progress?(done.increment(), work.count)
                }
            }
        }
        var tensors: [TensorSwitch] = []
        for r in results {
            switch r {
            case .success(let s): if let s { tensors.append(s) }
            case .failure(let e): throw e
            }
        }
        guard !tensors.isEmpty else {
            throw SwitchError(
                .emptyTaskVector,
                "\(sourcePath): the task vector over \(base.path) is empty: zero in every float tensor (a fine-tune equal to the base, or an untrained LoRA adapter with B = 0); there is nothing to pack."
            )
        }
        return SwitchPack(
            task: task, baseFingerprint: fingerprint, dropRatio: dropRatio,
            tieRule: randomMask == nil ? tieRule : .lowestIndex,  // no ties in a random mask; not stored
            tensors: tensors, head: head, labels: labels, kind: randomMask == nil ? .tSwitch : .randomMask,
            seed: randomMask?.seed ?? 0)
    }

    /// The random-mask switch of one tensor: τ at the entries of its seeded mask, rounded to the value code; nil
    /// when every stored value is zero.
    private static func randomSwitchOf(
        _ info: TensorInfo, tuned: [Float], base: ModelFolder, sourcePath: String, dropRatio: Double,
        settings: RandomMaskSettings
    ) throws(SwitchError) -> TensorSwitch? {
        let a = try io { () throws(CheckpointError) in try base.tensor(info.name).floats() }
        guard a.count <= 1 << 32 else {
            throw SwitchError(
                .unsupportedTensor,
                "\(sourcePath): tensor '\(info.name)' has \(a.count) elements; packs hold at most 2^32 per tensor.")
        }
        for i in a.indices where !(tuned[i] - a[i]).isFinite {
            throw nonFinite(info, index: i, source: sourcePath, base: base)
        }
        let seed = RandomMask.tensorSeed(packSeed: settings.seed, name: info.name)
        let mask = RandomMask.positions(count: a.count, dropRatio: dropRatio, seed: seed) ?? []
        let tau = mask.map { tuned[Int($0)] - a[Int($0)] }
        let (code, step, rounded, report) = KeptValues.round(tau, code: settings.code)
        settings.report?(info.name, report)
        var kept: [UInt32] = []
        var values: [Float] = []
        for (j, v) in rounded.enumerated() where v != 0 {
            kept.append(mask[j])
            values.append(v)
        }
        guard !kept.isEmpty else { return nil }
        return TensorSwitch(
            name: info.name, shape: info.shape, baseDType: info.dtype, lambda: Float(1 / (1 - dropRatio)),
            positive: kept, negative: [],
            values: KeptValues(code: code, step: step, values: values, maskSeed: seed, dropRatio: dropRatio))
    }

    /// The switch of one tensor from its fine-tuned values; nil when τ = 0 or P-Discard keeps nothing.
    private static func switchOf(
        _ info: TensorInfo, tuned: [Float], base: ModelFolder, sourcePath: String, dropRatio: Double,
        tieRule: PDiscard.TieRule
    ) throws(SwitchError) -> TensorSwitch? {
        let a = try io { () throws(CheckpointError) in try base.tensor(info.name).floats() }
        var tau = tuned
        a.withUnsafeBufferPointer { ab in
            tau.withUnsafeMutableBufferPointer { tb in
                Elementwise.subtract(UnsafeBufferPointer(tb), ab, into: tb)
            }
        }
        if info.shape.isEmpty {
            // 0-dim: carried exactly as one kept entry with λ = |τ| (λ·sign(τ) == τ in Float).
            let v = tau[0]
            guard v.isFinite else { throw nonFinite(info, index: 0, source: sourcePath, base: base) }
            if v == 0 { return nil }
            return TensorSwitch(
                name: info.name, shape: [], baseDType: info.dtype, lambda: Swift.abs(v), positive: v > 0 ? [0] : [],
                negative: v < 0 ? [0] : [])
        }
        let result: PDiscard.Result?
        do {
            result = try tau.withUnsafeBufferPointer { (tb) throws(PDiscard.Failure) in
                try PDiscard.run(tb, dropRatio: dropRatio, ties: tieRule)
            }
        } catch {
            switch error {
            case .nonFinite(let index): throw nonFinite(info, index: index, source: sourcePath, base: base)
            case .tooLarge(let count):
                throw SwitchError(
                    .unsupportedTensor,
                    "\(sourcePath): tensor '\(info.name)' has \(count) elements; packs hold at most 2^32 per tensor."
                )
            }
        }
        guard let result, result.keptCount > 0 else { return nil }
        guard (info.shape.last ?? 1) <= TernaryCoder.maxColumns else {
            throw SwitchError(
                .unsupportedTensor,
                "\(sourcePath): tensor '\(info.name)' has rows of \(info.shape.last ?? 0) entries; packs support at most \(TernaryCoder.maxColumns) per row."
            )
        }
        return TensorSwitch(
            name: info.name, shape: info.shape, baseDType: info.dtype, lambda: result.lambda, positive: result.positive,
            negative: result.negative)
    }

    private static func nonFinite(_ info: TensorInfo, index: Int, source: String, base: ModelFolder) -> SwitchError {
        SwitchError(
            .nonFiniteValue,
            "\(source): tensor '\(info.name)' minus the base \(base.path) is NaN or infinite at flat index \(index); expected finite weights."
        )
    }
}

/// A thread-safe counter for progress reports.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func increment() -> Int {
        lock.lock()
        defer { lock.unlock() }
        value += 1
        return value
    }
}

/// The fine-tune's entry for a base tensor, which must exist with the same shape: the first check of every task
/// vector τ = fine-tune − base (packing, the pulse analysis and the accuracy sweep).
public func counterpart(of info: TensorInfo, base: ModelFolder, fineTuned: ModelFolder) throws(SwitchError)
    -> TensorInfo
{
    guard let other = fineTuned.info(info.name) else {
        throw SwitchError(
            .missingTensor,
            "\(fineTuned.path): the fine-tune has no tensor '\(info.name)', which the base \(base.path) has.")
    }
    guard other.shape == info.shape else {
        throw SwitchError(
            .shapeMismatch,
            "\(fineTuned.path): tensor '\(info.name)' has shape \(other.shape); the base \(base.path) has \(info.shape)."
        )
    }
    return other
}
