import CheckpointIO
import Foundation
import TensorKernels

extension LoRAExtraction {
    /// The LoRA factors of one 2-D weight, or nil when its task vector has no singular value above the
    /// thresholds (then the module is not a LoRA target).
    static func decompose(
        _ info: TensorInfo, module: String, base: ModelFolder, fineTuned: ModelFolder, options: Options,
        asEmbedding: Bool, reports: inout [ModuleReport]
    ) throws(MergeError) -> Factors? {
        let (m, n) = (info.shape[0], info.shape[1])
        guard options.rank <= min(m, n) else {
            throw MergeError(
                .invalidInputs,
                "\(base.path): tensor '\(info.name)' is \(info.shapeDescription); rank \(options.rank) exceeds its smaller side \(min(m, n))."
            )
        }
        let d = try delta(info.name, base, fineTuned)
        let norm2 = d.reduce(0.0) { $0 + Double($1) * Double($1) }
        guard norm2.isFinite else {
            throw MergeError(
                .numerical,
                "\(fineTuned.path): tensor '\(info.name)': the task vector (fine-tune − base) is not finite.")
        }
        let svd: TruncatedSVD.Factors
        do {
            svd = try d.withUnsafeBufferPointer { (p) throws(TruncatedSVD.Failure) in
                try TruncatedSVD.decompose(
                    p, rows: m, cols: n, rank: options.rank, settings: options.svd, key: info.name)
            }
        } catch {
            throw MergeError(
                .numerical,
                "\(fineTuned.path): tensor '\(info.name)': LAPACK \(error.routine) failed (info \(error.info)).")
        }
        let s = svd.singularValues
        var k = min(options.rank, svd.count)
        if options.svEpsilon > 0 { k = min(k, s.prefix(k).filter { Double($0) > options.svEpsilon }.count) }
        if options.svRelative > 0, let top = s.first {
            k = min(k, s.prefix(k).filter { Double($0) >= options.svRelative * Double(top) }.count)
        }
        k = min(k, s.prefix(k).filter { $0 > 0 }.count)
        let kind: ModuleReport.Kind = asEmbedding ? .loraEmbedding : .lora
        let why = k < options.rank ? "rank cut by the singular-value threshold" : nil
        if k == 0 {
            reports.append(
                .init(
                    module: module, kind: kind, rank: 0, deltaNorm: norm2.squareRoot(),
                    errorNorm: norm2.squareRoot(), why: why))
            return nil
        }
        // Left and right scale per triplet: √σ on both, or σ on the right factor.
        let left = s.prefix(k).map { options.distributeScale ? $0.squareRoot() : 1 }
        let right = s.prefix(k).map { options.distributeScale ? $0.squareRoot() : $0 }
        // ΔW = Σ σᵢ uᵢ vᵢᵀ. Linear: B = [uᵢ·left] (m × k), A = [vᵢᵀ·right] (k × n). Embedding (PEFT stores ΔWᵀ =
        // B·A with A: k × m, B: n × k): A rows are uᵢᵀ·right, B columns vᵢ·left.
        let (uLen, vLen) = (m, n)
        let rowsA = asEmbedding ? uLen : vLen
        let colsB = asEmbedding ? vLen : uLen
        var a = [Float](repeating: 0, count: k * rowsA)
        var b = [Float](repeating: 0, count: colsB * k)
        for i in 0..<k {
            let aSource = asEmbedding ? svd.uT : svd.vT
            let bSource = asEmbedding ? svd.vT : svd.uT
            for j in 0..<rowsA { a[i * rowsA + j] = aSource[i * rowsA + j] * right[i] }
            for j in 0..<colsB { b[j * k + i] = bSource[i * colsB + j] * left[i] }
        }
        // The error of the factors themselves, measured (√(‖ΔW‖² − Σσᵢ²) would cancel catastrophically in Float
        // when ΔW is nearly rank k): one more m·n·k product, small beside the SVD.
        let product = LoRAAdapterFolder.lowRankProduct(b, a, rows: colsB, rank: k, cols: rowsA, scaling: 1)
        var error2 = 0.0
        for i in 0..<m {
            for j in 0..<n {
                let e = Double(d[i * n + j]) - Double(asEmbedding ? product[j * m + i] : product[i * n + j])
                error2 += e * e
            }
        }
        reports.append(
            .init(
                module: module, kind: kind, rank: k, deltaNorm: norm2.squareRoot(), errorNorm: error2.squareRoot(),
                why: why))
        return Factors(
            a: a, b: b, aShape: [k, rowsA], bShape: [colsB, k],
            dtype: options.dtype ?? fineTuned.info(info.name)?.dtype ?? info.dtype,
            embedding: asEmbedding)
    }

    /// Fine-tune − base of one tensor, in Float.
    static func delta(_ name: String, _ base: ModelFolder, _ fineTuned: ModelFolder) throws(MergeError) -> [Float] {
        try checkpoint { () throws(CheckpointError) -> [Float] in
            let bv = try base.tensor(name)
            let fv = try fineTuned.tensor(name)
            guard bv.dtype.isConvertibleFloat, fv.dtype.isConvertibleFloat else {
                throw CheckpointError(
                    .unsupportedDType,
                    "\(fineTuned.path): tensor '\(name)' is \(fv.dtype.rawValue) (base \(bv.dtype.rawValue)); LoRA extraction needs float tensors."
                )
            }
            var d = try fv.floats()
            let b = try bv.floats()
            d.withUnsafeMutableBufferPointer { dp in b.withUnsafeBufferPointer { Elementwise.axpy(-1, $0, dp) } }
            bv.release()
            fv.release()
            return d
        }
    }

    /// Whether a tensor's bytes differ between the models (any dtype).
    static func differs(_ name: String, _ base: ModelFolder, _ fineTuned: ModelFolder) throws(MergeError) -> Bool {
        try checkpoint { () throws(CheckpointError) -> Bool in
            let bv = try base.tensor(name)
            let fv = try fineTuned.tensor(name)
            defer {
                bv.release()
                fv.release()
            }
            if bv.dtype != fv.dtype { return true }
            let (x, y) = (bv.bytes, fv.bytes)
            guard let xp = x.baseAddress, let yp = y.baseAddress else { return x.count != y.count }
            return x.count != y.count || memcmp(xp, yp, x.count) != 0
        }
    }
}
