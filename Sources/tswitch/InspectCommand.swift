import ArgumentParser
import CheckpointIO
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List the tensors of a safetensors file or model folder, with dtype, shape and bytes.")

    @Argument(help: "A .safetensors file or a model folder (single file or sharded with an index).")
    var path: String

    @OptionGroup
    var format: JSONOption

    @Flag(help: "Print only the totals and metadata, not every tensor.")
    var summary = false

    func run() throws {
        let model = try ModelFolder(path: path)
        let infos = model.tensorInfos
        var byDType: [DType: (count: Int, params: Int, bytes: Int)] = [:]
        for t in infos {
            let e = byDType[t.dtype, default: (0, 0, 0)]
            byDType[t.dtype] = (e.count + 1, e.params + t.elementCount, e.bytes + t.byteCount)
        }
        let metadata = model.files.first?.metadata ?? [:]
        if format.json {
            var root: [String: Any] = [
                "path": path,
                "files": model.files.map(\.path),
                "tensor_count": infos.count,
                "parameters": model.parameterCount,
                "bytes": model.totalBytes,
                "metadata": metadata,
                "dtypes": Dictionary(uniqueKeysWithValues: byDType.map { ($0.key.rawValue, ["tensors": $0.value.count, "parameters": $0.value.params, "bytes": $0.value.bytes]) }),
            ]
            if !summary {
                root["tensors"] = infos.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape, "bytes": $0.byteCount] as [String: Any] }
            }
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if !summary {
            let width = min(80, infos.map(\.name.count).max() ?? 10)
            print(pad("tensor", width), pad("dtype", 6), pad("shape", 16), "bytes")
            for t in infos {
                print(pad(t.name, width), pad(t.dtype.rawValue, 6), pad(t.shapeDescription, 16), Format.bytes(t.byteCount))
            }
            print("")
        }
        print("\(model.files.count) file(s), \(infos.count) tensors, \(Format.count(model.parameterCount)) parameters, \(Format.bytes(model.totalBytes))")
        for (d, e) in byDType.sorted(by: { $0.value.bytes > $1.value.bytes }) {
            print("  \(pad(d.rawValue, 6)) \(e.count) tensors, \(Format.count(e.params)) parameters, \(Format.bytes(e.bytes))")
        }
        if !metadata.isEmpty {
            print("metadata: " + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
}
