import Foundation

/// Rope scaling as a GGUF file states it, in Hugging Face's `rope_scaling` terms.
///
/// llama.cpp writes linear scaling as metadata (`<arch>.rope.scaling.type = linear`, `.factor`), but Llama 3.1's
/// and 3.2's `llama3` scaling as a tensor, `rope_freqs.weight`: one divisor per rotary frequency. Hugging Face
/// computes those divisors from four numbers, so the tensor is read back into them (Llama 3's published low/high
/// frequency factors and original context, the factor from the low-frequency end) and accepted only when the
/// divisors they give equal the file's. `transformers`' own GGUF loader reads neither and loads such a model
/// with plain rope.
public enum GGUFRopeScaling {
    typealias ConfigValue = GGUFLlamaMapping.ConfigValue

    /// `rope_scaling` for `<arch>.rope.scaling.*`, nil for none.
    static func fromMetadata(_ h: GGUFHeader, architecture a: String, path: String) throws(CheckpointError)
        -> [String: ConfigValue]?
    {
        guard let kind = h.value("\(a).rope.scaling.type")?.stringValue, kind != "none" else { return nil }
        guard kind == "linear" else {
            throw CheckpointError(
                .invalidMetadata,
                "\(path): metadata key '\(a).rope.scaling.type' is '\(kind)'; only 'linear' rope scaling (and Llama 3's rope_freqs tensor) is converted."
            )
        }
        let key = "\(a).rope.scaling.factor"
        guard let factor = h.value(key)?.doubleValue, factor.isFinite, factor >= 1 else {
            throw CheckpointError(
                .invalidMetadata,
                "\(path): metadata key '\(key)' is \(h.value(key)?.summary() ?? "missing"); linear rope scaling needs a factor ≥ 1."
            )
        }
        return ["rope_type": .string("linear"), "factor": .double(factor)]
    }

    /// Llama 3's published parameters besides the factor (Llama 3.1 and 3.2 share them).
    static let llama3 = (low: 1.0, high: 4.0, original: 8192)

    /// The divisor of each rotary frequency under `llama3` scaling, as `transformers` computes it
    /// (`_compute_llama3_parameters`; llama.cpp's converter writes the same values).
    public static func llama3Divisors(
        theta: Double, headDim: Int, factor: Double, low: Double, high: Double, original: Int
    ) -> [Double] {
        let lowWavelength = Double(original) / low
        let highWavelength = Double(original) / high
        return stride(from: 0, to: headDim, by: 2).map { i in
            let wavelength = 2 * Double.pi * pow(theta, Double(i) / Double(headDim))
            if wavelength < highWavelength { return 1 }
            if wavelength > lowWavelength { return factor }
            let smooth = (Double(original) / wavelength - low) / (high - low)
            return 1 / ((1 - smooth) / factor + smooth)
        }
    }

    /// `rope_scaling` for a `rope_freqs.weight` tensor's divisors, nil when they are all 1 (plain rope).
    static func fromFrequencyDivisors(
        _ divisors: [Float], theta: Double, headDim: Int, path: String
    ) throws(CheckpointError) -> [String: ConfigValue]? {
        guard divisors.count == headDim / 2, divisors.allSatisfy({ $0.isFinite && $0 >= 1 - 1e-6 }) else {
            throw CheckpointError(
                .invalidShape,
                "\(path): tensor 'rope_freqs.weight' has \(divisors.count) values; expected \(headDim / 2) finite divisors ≥ 1 (one per rotary frequency of head size \(headDim))."
            )
        }
        if divisors.allSatisfy({ abs($0 - 1) <= 1e-6 }) { return nil }
        let factor = Double(divisors.max() ?? 1)
        let p = llama3
        let want = llama3Divisors(
            theta: theta, headDim: headDim, factor: factor, low: p.low, high: p.high, original: p.original)
        let worst = zip(divisors, want).map { abs(Double($0) - $1) / $1 }.max() ?? 0
        guard worst <= 1e-5 else {
            throw CheckpointError(
                .invalidMetadata,
                "\(path): tensor 'rope_freqs.weight' holds rotary divisors that Llama 3's rope scaling (factor \(factor), low/high frequency factors \(p.low)/\(p.high), original context \(p.original)) does not give (worst relative difference \(worst)); it is not converted."
            )
        }
        return [
            "rope_type": .string("llama3"), "factor": .double(factor), "low_freq_factor": .double(p.low),
            "high_freq_factor": .double(p.high), "original_max_position_embeddings": .int(p.original),
        ]
    }
}
