import CheckpointIO
import Foundation
import TensorKernels

/// Writes a full model θ + Σ_k w_k λ_k S_A^k ⊙ S_P^k (random-mask packs: θ + Σ_k w_k/(1−α_k) M^k ⊙ τ^k) from a base
/// folder and weighted packs, streaming tensor by tensor through `ModelWriter` (atomic: the folder appears only
/// when complete).
public enum SwitchApplier {
    /// Checks that every pack fits `base`: fingerprint, tensor names and shapes, finite weights.
    public static func validate(
        _ packs: [(pack: SwitchPack, weight: Float)], base: ModelFolder, fingerprint: BaseFingerprint
    )
        throws(SwitchError)
    {
        guard !packs.isEmpty else {
            throw SwitchError(.invalidArgument, "No packs were given; expected at least one .tsw file.")
        }
        for (pack, weight) in packs {
            try pack.checkFits(weight: weight, fingerprint: fingerprint, source: base.path) { name in
                base.info(name).map { ($0.shape, $0.dtype.isConvertibleFloat ? nil : $0.dtype.rawValue) }
            }
        }
    }

    /// Adds the switches of `packs` touching one tensor to `values`, in pack order, through `SwitchKernel` (the
    /// loop `SwitchableModel` and the `t_switch` merge method use, so the same Float operations).
    public static func add(_ switches: [(TensorSwitch, Float)], to values: UnsafeMutableBufferPointer<Float>) {
        for (sw, weight) in switches {
            let c = weight * sw.lambda
            switch sw.payload {
            case .signs(let positive, let negative):
                SwitchKernel.addSigns(c, positive: positive, negative: negative, to: values)
            case .values(let indices, let kept):
                SwitchKernel.addValues(c, at: indices, values: kept.values, to: values)
            }
        }
    }

    /// Writes the switched model to `output`.
    ///
    /// - Parameters:
    ///   - dtype: the output dtype of float tensors; nil keeps each tensor's base dtype.
    /// - Returns: the number of tensors that were switched.
    @discardableResult
    public static func write(
        base: ModelFolder, packs: [(pack: SwitchPack, weight: Float)], output: String, dtype: DType? = nil,
        overwrite: Bool = false, progress: ((Int, Int) -> Void)? = nil
    ) throws(SwitchError) -> Int {
        let fingerprint = try BaseFingerprint(model: base)
        try validate(packs, base: base, fingerprint: fingerprint)
        var byTensor: [String: [(TensorSwitch, Float)]] = [:]
        for (pack, weight) in packs {
            for t in pack.tensors { byTensor[t.name, default: []].append((t, weight)) }
        }
        let infos = base.tensorInfos
        let specs = infos.map { info in
            TensorSpec(
                name: info.name, dtype: info.dtype.isConvertibleFloat ? (dtype ?? info.dtype) : info.dtype,
                shape: info.shape)
        }
        var switched = 0
        try io { () throws(CheckpointError) in
            let writer = try ModelWriter(directory: output, tensors: specs, overwrite: overwrite)
            for (k, info) in infos.enumerated() {
                let view = try base.tensor(info.name)
                if let sws = byTensor[info.name] {
                    var values = try view.floats()
                    values.withUnsafeMutableBufferPointer { add(sws, to: $0) }
                    try writer.write(info.name, floats: values)
                    switched += 1
                } else {
                    try writer.write(info.name, from: view)
                }
                view.release()
                progress?(k + 1, infos.count)
            }
            try writer.copySupportFiles(from: base, dtype: dtype)
            let heads = packs.filter { !$0.pack.head.isEmpty }
            if heads.count == 1, let pack = heads.first?.pack {
                try writer.addFile("head.safetensors", contents: Data(headFile(pack.head, task: pack.task)))
                if !pack.labels.isEmpty {
                    let json = try? JSONSerialization.data(
                        withJSONObject: ["task": pack.task, "labels": pack.labels],
                        options: [.prettyPrinted, .sortedKeys])
                    try writer.addFile("labels.json", contents: json ?? Data())
                }
            }
            try writer.finish()
        }
        return switched
    }

    /// A safetensors file (in memory) holding a head's tensors as F32; a logit scale goes back into the metadata,
    /// where `LinearHead(path:)` and `tswitch head` keep it.
    public static func headFile(_ head: [DenseTensor], task: String) -> [UInt8] {
        var metadata = ["format": "pt", "task": task]
        var tensors = head
        if let k = tensors.firstIndex(where: { $0.name == DenseTensor.logitScaleName && $0.values.count == 1 }) {
            metadata[DenseTensor.logitScaleName] = "\(tensors[k].values[0])"
            tensors.remove(at: k)
        }
        let specs = tensors.map { TensorSpec(name: $0.name, dtype: .F32, shape: $0.shape) }
        var out = SafeTensorsHeader.encode(specs, metadata: metadata)
        for h in tensors { h.values.withUnsafeBytes { out.append(contentsOf: $0) } }
        return out
    }

    /// Reads a head file (every float tensor as F32).
    public static func readHead(_ path: String) throws(SwitchError) -> [DenseTensor] {
        let file = try io { () throws(CheckpointError) in try SafeTensorsFile(path: path) }
        var out: [DenseTensor] = []
        for info in file.tensors {
            guard info.dtype.isConvertibleFloat else {
                throw SwitchError(
                    .invalidHead,
                    "\(path): head tensor '\(info.name)' is \(info.dtype.rawValue); expected a float tensor.")
            }
            guard info.elementCount <= 1 << 26 else {
                throw SwitchError(
                    .invalidHead,
                    "\(path): head tensor '\(info.name)' has \(info.elementCount) elements; a head is a small dense layer (at most 2^26)."
                )
            }
            let values = try io { () throws(CheckpointError) in try file.tensor(info.name).floats() }
            out.append(DenseTensor(name: info.name, shape: info.shape, values: values))
        }
        guard !out.isEmpty else { throw SwitchError(.invalidHead, "\(path): the head file holds no tensors.") }
        if let raw = file.metadata[DenseTensor.logitScaleName] {
            guard let scale = Float(raw.trimmingCharacters(in: .whitespaces)), scale.isFinite, scale > 0 else {
                throw SwitchError(
                    .invalidHead,
                    "\(path): metadata '\(DenseTensor.logitScaleName)' is \"\(raw)\"; expected a finite positive number."
                )
            }
            guard !out.contains(where: { $0.name == DenseTensor.logitScaleName }) else {
                throw SwitchError(
                    .invalidHead,
                    "\(path): '\(DenseTensor.logitScaleName)' is both a tensor and a metadata entry; keep one.")
            }
            out.append(DenseTensor(name: DenseTensor.logitScaleName, shape: [1], values: [scale]))
        }
        return out
    }
}
