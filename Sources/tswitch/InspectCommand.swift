import ArgumentParser
import CheckpointIO
import Foundation

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "List the tensors of a safetensors file, model folder or GGUF file, with type, shape and bytes.",
        discussion: """
            GGUF files also list their header (version, alignment) and metadata key-values; tensors show their \
            ggml type (Q4_K, F16, ...) and their row-major shape (the file's dimensions reversed, as PyTorch \
            spells them).
            """)

    @Argument(help: "A .safetensors file, a model folder (single file or sharded with an index), or a .gguf file.")
    var path: String

    @OptionGroup
    var format: JSONOption

    @Flag(help: "Print only the totals and metadata, not every tensor.")
    var summary = false

    func run() throws {
        let model = try openTensorProvider(path: path)
        let infos = model.tensorEntries
        var byType: [String: (count: Int, params: Int, bytes: Int)] = [:]
        for t in infos {
            let e = byType[t.typeName, default: (0, 0, 0)]
            byType[t.typeName] = (e.count + 1, e.params + t.elementCount, e.bytes + t.byteCount)
        }
        let parameters = infos.reduce(0) { $0 + $1.elementCount }
        let bytes = infos.reduce(0) { $0 + $1.byteCount }
        let gguf = model as? GGUFFile
        let metadata = model.metadataSummary
        if format.json {
            var root: [String: Any] = [
                "path": path,
                "format": gguf == nil ? "safetensors" : "gguf",
                "files": model.filePaths,
                "tensor_count": infos.count,
                "parameters": parameters,
                "bytes": bytes,
                "metadata": metadata,
                "dtypes": Dictionary(
                    uniqueKeysWithValues: byType.map {
                        ($0.key, ["tensors": $0.value.count, "parameters": $0.value.params, "bytes": $0.value.bytes])
                    }),
            ]
            if let gguf { root["gguf"] = GGUFJSON.header(gguf.header, values: !summary) }
            if !summary {
                root["tensors"] = infos.map { t -> [String: Any] in
                    var d: [String: Any] = [
                        "name": t.name, "dtype": t.typeName, "shape": t.shape, "bytes": t.byteCount,
                    ]
                    if let g = gguf?.info(t.name) { d["offset"] = g.offset }
                    return d
                }
            }
            let data = try JSONSerialization.data(withJSONObject: root, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if !summary {
            let width = min(80, infos.map(\.name.count).max() ?? 10)
            print(pad("tensor", width), pad("dtype", 6), pad("shape", 16), "bytes")
            for t in infos {
                print(pad(t.name, width), pad(t.typeName, 6), pad(t.shapeDescription, 16), Format.bytes(t.byteCount))
            }
            print("")
        }
        if let gguf {
            print(
                "GGUF version \(gguf.header.version), alignment \(gguf.header.alignment), \(gguf.header.metadata.count) key-values, \(infos.count) tensors, \(Format.count(parameters)) parameters, \(Format.bytes(bytes))"
            )
        } else {
            print(
                "\(model.filePaths.count) file(s), \(infos.count) tensors, \(Format.count(parameters)) parameters, \(Format.bytes(bytes))"
            )
        }
        for (d, e) in byType.sorted(by: { $0.value.bytes > $1.value.bytes }) {
            print("  \(pad(d, 6)) \(e.count) tensors, \(Format.count(e.params)) parameters, \(Format.bytes(e.bytes))")
        }
        if let gguf {
            for (key, value) in gguf.header.metadata { print("  \(key) = \(value.summary())") }
        } else if !metadata.isEmpty {
            print(
                "metadata: "
                    + metadata.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
    }

    private func pad(_ s: String, _ n: Int) -> String {
        s.count >= n ? s : s + String(repeating: " ", count: n - s.count)
    }
}

/// GGUF header and metadata as JSON for `inspect --json`: every key-value with its GGUF type, arrays in full
/// (`values: false` gives arrays as type and length only).
enum GGUFJSON {
    static func header(_ h: GGUFHeader, values: Bool) -> [String: Any] {
        [
            "version": h.version, "alignment": h.alignment, "data_start": h.dataStart,
            "key_values": h.metadata.map { kv -> [String: Any] in
                var d: [String: Any] = ["key": kv.key, "type": kv.value.type.name]
                if case .array(let t, let items) = kv.value {
                    d["element_type"] = t.name
                    d["count"] = items.count
                    if values { d["value"] = items.map(json) }
                } else {
                    d["value"] = json(kv.value)
                }
                return d
            },
        ]
    }

    static func json(_ v: GGUFValue) -> Any {
        switch v {
        case .uint8(let x): x
        case .int8(let x): x
        case .uint16(let x): x
        case .int16(let x): x
        case .uint32(let x): x
        case .int32(let x): x
        case .uint64(let x): x
        case .int64(let x): x
        // JSON has no NaN or infinity: those are written as strings ("nan", "inf", "-inf").
        case .float32(let x): x.isFinite ? Double(x) as Any : "\(x)"
        case .float64(let x): x.isFinite ? x as Any : "\(x)"
        case .bool(let x): x
        case .string(let x): x
        case .array(_, let items): items.map(json)
        }
    }
}
