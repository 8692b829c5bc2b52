import CheckpointIO
import TensorKernels

/// Weighted average Σ wᵢ xᵢ / Σ wᵢ (Wortsman et al. 2022, "model soups"); the base is an ordinary input.
public enum LinearMerge: StreamingMergeMethod {
    public static let name = "linear"
    public static let basePolicy = BasePolicy.ignored
    public static let summary = "weighted average of the models"
    public static let parameters: [ParameterSpec] = [
        .number("weight", scope: .input), .bool("normalize", default: true),
    ]

    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        let weights = c.inputs.map { Float($0.number("weight")) }
        var total: Float = 0
        for w in weights { total += w }
        let normalize = c.bool("normalize")
        let m = c.inputs.count
        // One fused pass from the stored inputs when they and the output share BF16 or F32.
        if FusedStream.weightedSum(c.inputs.map(\.source), weights: weights, divide: normalize ? total : 1, into: sink)
        {
            return
        }
        BlockStream.run(count: c.count, sources: c.inputs.map(\.source), extra: 1) { _, _, r, b in
            let out = b[m]
            let cnt = r.count
            for j in 0..<cnt { out[j] = 0 }
            for i in 0..<m {
                let x = b[i]
                let w = weights[i]
                for j in 0..<cnt { out[j] += x[j] * w }
            }
            // mergekit divides by Σw unguarded; a zero sum gives Inf/NaN there too.
            if normalize { for j in 0..<cnt { out[j] /= total } }
            sink.write(r, from: out)
        }
    }
}

/// Copies the single input (layer stacks, frankenmerges), optionally scaled.
public enum PassthroughMerge: StreamingMergeMethod {
    public static let name = "passthrough"
    public static let basePolicy = BasePolicy.ignored
    public static let summary = "copy tensors and layer stacks unchanged"
    public static let parameters: [ParameterSpec] = [.number("scale", scope: .input, default: 1)]
    public static let nonBaseCount = 1...1

    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        let input = c.inputs[0]
        let scale = Float(input.number("scale"))
        BlockStream.run(count: c.count, sources: [input.source]) { _, _, r, b in
            if scale != 1 { for j in 0..<r.count { b[0][j] *= scale } }
            sink.write(r, from: b[0])
        }
    }
}
