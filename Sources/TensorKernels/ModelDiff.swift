import CheckpointIO

/// Streams two models with the same tensors (a base and its fine-tune) tensor by tensor and computes the task
/// vector statistics of each, with memory bounded by the largest tensor: three f32 buffers are reused, and each
/// tensor's mapped pages are released after use. Either model may be any `TensorProvider` (safetensors or GGUF,
/// quantized tensors dequantized to f32).
public struct ModelDiff: Sendable {
    /// One tensor's result; `stats` is nil for tensors that are not floating point (integer buffers, masks),
    /// which are compared for equality of bytes instead.
    public struct Entry: Sendable {
        public let name: String
        /// The stored type as the format spells it (`BF16`, `Q4_K`); the base's.
        public let typeName: String
        public let shape: [Int]
        public let stats: TaskVectorStats?
        /// For non-float tensors: whether the bytes are identical.
        public let bytesEqual: Bool?
    }

    /// Totals over all float tensors. `topShares` are Σ over tensors of the mass in each tensor's own top p %
    /// entries, divided by the total mass: the per-tensor selection T-Switch uses, aggregated (an exact global
    /// top-p would need every entry in memory at once).
    public struct Summary: Sendable {
        public var tensors = 0
        public var elements = 0
        public var l2Norm = 0.0
        public var l1Mass = 0.0
        public var maxAbs: Float = 0
        public var zeroCount = 0
        public var nonFiniteCount = 0
        public var topMass: [Double] = TaskVectorStats.topFractions.map { _ in 0 }
        public var topShares: [Double] { topMass.map { l1Mass > 0 ? $0 / l1Mass : 0 } }
        public var zeroFraction: Double { elements == 0 ? 0 : Double(zeroCount) / Double(elements) }
    }

    public let base: any TensorProvider
    public let finetuned: any TensorProvider

    /// Checks that both models hold the same tensor names with the same shapes.
    public init(base: any TensorProvider, finetuned: any TensorProvider) throws(CheckpointError) {
        self.base = base
        self.finetuned = finetuned
        let b = Set(base.tensorNames)
        let f = Set(finetuned.tensorNames)
        if let missing = base.tensorNames.first(where: { !f.contains($0) }) {
            let more = b.subtracting(f).count - 1
            throw CheckpointError(
                .modelMismatch,
                "\(finetuned.path): tensor '\(missing)' of the base \(base.path) is missing from the fine-tune\(more > 0 ? " (and \(more) more)" : "")."
            )
        }
        if let extra = finetuned.tensorNames.first(where: { !b.contains($0) }) {
            let more = f.subtracting(b).count - 1
            throw CheckpointError(
                .modelMismatch,
                "\(finetuned.path): tensor '\(extra)' is not in the base \(base.path)\(more > 0 ? " (and \(more) more)" : "")."
            )
        }
        for name in base.tensorNames {
            guard let bi = base.entry(name), let fi = finetuned.entry(name) else { continue }
            guard bi.shape == fi.shape else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(finetuned.path): tensor '\(name)' has shape \(fi.shapeDescription) but the base has \(bi.shapeDescription)."
                )
            }
            guard bi.isFloat == fi.isFloat else {
                throw CheckpointError(
                    .modelMismatch,
                    "\(finetuned.path): tensor '\(name)' is \(fi.typeName) but the base has \(bi.typeName).")
            }
        }
    }

    /// Calls `body` for every tensor in the base's storage order, then returns the summary.
    @discardableResult
    public func run(_ body: (Entry) throws -> Void = { _ in }) throws -> Summary {
        let largest = base.tensorEntries.map(\.elementCount).max() ?? 0
        let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: 3 * max(1, largest))
        defer { buffer.deallocate() }
        var summary = Summary()
        for name in base.tensorNames {
            guard let entry = base.entry(name) else { continue }
            defer {
                base.release(name)
                finetuned.release(name)
            }
            guard entry.isFloat else {
                try body(
                    Entry(
                        name: name, typeName: entry.typeName, shape: entry.shape, stats: nil,
                        bytesEqual: try base.rawBytes(name).elementsEqual(try finetuned.rawBytes(name))))
                continue
            }
            let n = entry.elementCount
            let b = UnsafeMutableBufferPointer(rebasing: buffer[0..<n])
            let f = UnsafeMutableBufferPointer(rebasing: buffer[n..<(2 * n)])
            let s = UnsafeMutableBufferPointer(rebasing: buffer[(2 * n)..<(3 * n)])
            try base.copyFloats(name, into: b)
            try finetuned.copyFloats(name, into: f)
            let stats = TaskVectorStats.compute(
                base: UnsafeBufferPointer(b), finetuned: UnsafeBufferPointer(f), scratch: s)
            summary.tensors += 1
            summary.elements += n
            summary.l2Norm += stats.l2Norm * stats.l2Norm  // squared until the end
            summary.l1Mass += stats.l1Mass
            summary.maxAbs = max(summary.maxAbs, stats.maxAbs)
            summary.zeroCount += stats.zeroCount
            summary.nonFiniteCount += stats.nonFiniteCount
            for i in summary.topMass.indices { summary.topMass[i] += stats.topMass[i] }
            try body(Entry(name: name, typeName: entry.typeName, shape: entry.shape, stats: stats, bytesEqual: nil))
        }
        summary.l2Norm = summary.l2Norm.squareRoot()
        return summary
    }
}
