import Foundation

/// One logical model: a single safetensors file, or a Hugging Face folder with `model.safetensors` or shards
/// listed by `model.safetensors.index.json`, plus `config.json` and tokenizer files; or a llama or qwen2 GGUF file
/// seen as the Hugging Face model `tswitch convert` would make of it.
///
/// Opening validates every shard's header and the index against the shards; no tensor data is read.
///
/// A GGUF file (told by its magic) is the seam through which every command that reads models (`merge`, `pack`,
/// ...) takes one: its tensors are listed under their Hugging Face names as F32 (`GGUFLlamaMapping`), and
/// `tensor(_:)` dequantizes one tensor into anonymous memory that lives as long as its view, so a streamed pass
/// holds one tensor per input, never the model. `config()` and `generatedFiles` come from the metadata.
public final class ModelFolder: Sendable {
    /// The folder (or, for a bare file, the file's folder).
    public let directory: URL
    /// The path the user gave.
    public let path: String
    public let files: [SafeTensorsFile]
    /// Tensor names in storage order (shard by shard, then by offset).
    public let tensorNames: [String]
    private let location: [String: Int]
    /// The llama or qwen2 GGUF behind this model, nil for safetensors.
    public let gguf: GGUFLlamaMapping?
    /// For a GGUF model: each tensor's F32 entry (offsets as if stored back to back) and its index in `gguf.tensors`.
    private let ggufInfos: [TensorInfo]
    private let ggufIndex: [String: Int]
    /// Support files made from a GGUF file's metadata, as `tswitch convert` writes them (`config.json` with
    /// `torch_dtype` float32, tokenizer files for byte-level BPE vocabularies); empty for safetensors.
    public let generatedFiles: [String: Data]

    /// Index file names tried, in order, when a folder has no single `model.safetensors`.
    public static let indexNames = ["model.safetensors.index.json"]

    public init(path: String) throws(CheckpointError) {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw CheckpointError(.notAModel, "\(path): no such file or folder.")
        }
        if !isDir.boolValue, GGUFFile.hasMagic(path: path) {
            let mapping = try GGUFLlamaMapping(file: GGUFFile(path: path))
            var infos: [TensorInfo] = []
            var offset = 0
            for t in mapping.tensors {
                guard let bytes = TensorInfo.byteCount(shape: t.shape, dtype: .F32) else {
                    throw CheckpointError(
                        .invalidShape, "\(path): tensor '\(t.ggufName)' has shape \(t.shape); its f32 size overflows.")
                }
                infos.append(
                    TensorInfo(name: t.hfName, dtype: .F32, shape: t.shape, dataOffsets: offset..<(offset + bytes)))
                offset += bytes
            }
            var generated = try GGUFTokenizerFiles.build(mapping.file.header, file: path).files
            generated["config.json"] = try mapping.configJSON(torchDType: "float32")
            directory = URL(fileURLWithPath: path).deletingLastPathComponent()
            self.files = []
            gguf = mapping
            ggufInfos = infos
            ggufIndex = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
            generatedFiles = generated
            self.tensorNames = infos.map(\.name)
            self.location = [:]
            return
        }
        gguf = nil
        ggufInfos = []
        ggufIndex = [:]
        generatedFiles = [:]
        let files: [SafeTensorsFile]
        var location: [String: Int] = [:]
        var names: [String] = []
        if !isDir.boolValue {
            directory = URL(fileURLWithPath: path).deletingLastPathComponent()
            files = [try SafeTensorsFile(path: path)]
        } else {
            directory = URL(fileURLWithPath: path, isDirectory: true)
            let single = directory.appendingPathComponent("model.safetensors").path
            let index = directory.appendingPathComponent("model.safetensors.index.json").path
            if FileManager.default.fileExists(atPath: index) {
                files = try Self.openSharded(indexPath: index, directory: directory)
            } else if FileManager.default.fileExists(atPath: single) {
                files = [try SafeTensorsFile(path: single)]
            } else {
                let found =
                    (try? FileManager.default.contentsOfDirectory(atPath: path))?
                    .filter { $0.hasSuffix(".safetensors") }.sorted() ?? []
                if found.count == 1 {
                    files = [try SafeTensorsFile(path: directory.appendingPathComponent(found[0]).path)]
                } else {
                    let seen = found.isEmpty ? "no .safetensors file" : "\(found.count) .safetensors files and no index"
                    throw CheckpointError(
                        .notAModel,
                        "\(path): expected model.safetensors or model.safetensors.index.json in the folder; found \(seen)."
                    )
                }
            }
        }
        for (fi, f) in files.enumerated() {
            for t in f.tensors {
                if let other = location[t.name] {
                    throw CheckpointError(
                        .tensorInTwoShards,
                        "\(path): tensor '\(t.name)' is stored in both \(files[other].path) and \(f.path).")
                }
                location[t.name] = fi
                names.append(t.name)
            }
        }
        self.files = files
        self.location = location
        self.tensorNames = names
    }

    /// Opens the shards named by an index and checks the weight map against them.
    private static func openSharded(indexPath: String, directory: URL) throws(CheckpointError) -> [SafeTensorsFile] {
        let data: Data
        do {
            let size = try FileManager.default.attributesOfItem(atPath: indexPath)[.size] as? Int ?? 0
            guard size <= SafeTensorsHeader.Limits.maxIndexBytes else {
                throw CheckpointError(
                    .limitExceeded,
                    "\(indexPath): the index has \(size) bytes; at most \(SafeTensorsHeader.Limits.maxIndexBytes) are allowed."
                )
            }
            data = try Data(contentsOf: URL(fileURLWithPath: indexPath))
        } catch let e as CheckpointError {
            throw e
        } catch {
            throw CheckpointError(.io, "\(indexPath): cannot read: \(error.localizedDescription).")
        }
        let weightMap = try parseIndex(data, file: indexPath)
        var shardNames: [String] = []
        var shardSet = Set<String>()
        for (_, shard) in weightMap where shardSet.insert(shard).inserted { shardNames.append(shard) }
        shardNames.sort()
        var files: [SafeTensorsFile] = []
        for shard in shardNames {
            guard !shard.contains("/"), !shard.hasPrefix(".") else {
                throw CheckpointError(
                    .invalidIndex, "\(indexPath): shard name '\(shard)' must be a file name in the model's folder.")
            }
            let p = directory.appendingPathComponent(shard).path
            guard FileManager.default.fileExists(atPath: p) else {
                let user = weightMap.first { $0.shard == shard }?.tensor ?? "?"
                throw CheckpointError(
                    .missingShard,
                    "\(indexPath): shard '\(shard)' (holding '\(user)' and others) does not exist in \(directory.path)."
                )
            }
            files.append(try SafeTensorsFile(path: p))
        }
        let byShard = Dictionary(uniqueKeysWithValues: zip(shardNames, files))
        var mapped = Set<String>()
        for (tensor, shard) in weightMap {
            mapped.insert(tensor)
            guard let f = byShard[shard], f.info(tensor) != nil else {
                throw CheckpointError(
                    .tensorMissingFromShard,
                    "\(indexPath): tensor '\(tensor)' is mapped to '\(shard)', which does not contain it.")
            }
        }
        for f in files {
            for t in f.tensors where !mapped.contains(t.name) {
                throw CheckpointError(
                    .tensorNotInIndex,
                    "\(f.path): tensor '\(t.name)' is in the shard but not in the index's weight_map.")
            }
        }
        return files
    }

    /// Parses `{"metadata": {...}, "weight_map": {tensor: shard}}`, refusing a tensor mapped twice.
    public static func parseIndex(_ data: Data, file: String) throws(CheckpointError) -> [(
        tensor: String, shard: String
    )] {
        guard String(data: data, encoding: .utf8) != nil else {
            throw CheckpointError(.invalidIndex, "\(file): not valid UTF-8.")
        }
        let root: JSONValue
        do {
            root = try data.withUnsafeBytes { (b) throws(JSONParseError) -> JSONValue in try HeaderJSONParser.parse(b) }
        } catch let error as JSONParseError {
            throw CheckpointError(.invalidIndex, "\(file): not valid JSON: \(error.reason) at byte \(error.offset).")
        } catch {
            throw CheckpointError(.invalidIndex, "\(file): not valid JSON.")
        }
        guard case .object(let top) = root,
            let wm = top.first(where: { $0.key == "weight_map" })?.value
        else {
            throw CheckpointError(.invalidIndex, "\(file): expected an object with a 'weight_map'.")
        }
        guard case .object(let pairs) = wm else {
            throw CheckpointError(.invalidIndex, "\(file): 'weight_map' is \(wm.kind); expected an object.")
        }
        var out: [(tensor: String, shard: String)] = []
        var seen = Set<String>()
        for (k, v) in pairs {
            guard let shard = v.stringValue else {
                throw CheckpointError(
                    .invalidIndex, "\(file): weight_map entry '\(k)' is \(v.kind); expected a file name.")
            }
            guard seen.insert(k).inserted else {
                throw CheckpointError(.tensorInTwoShards, "\(file): tensor '\(k)' appears twice in weight_map.")
            }
            out.append((k, shard))
        }
        return out
    }

    public func contains(_ name: String) -> Bool { location[name] != nil || ggufIndex[name] != nil }

    public func info(_ name: String) -> TensorInfo? {
        if gguf != nil { return ggufIndex[name].map { ggufInfos[$0] } }
        return location[name].flatMap { files[$0].info(name) }
    }

    /// All tensors in storage order.
    public var tensorInfos: [TensorInfo] { gguf != nil ? ggufInfos : files.flatMap(\.tensors) }

    /// The tensor's name in the GGUF file behind this model (`blk.0.attn_q.weight`), for messages; nil for
    /// safetensors.
    public func ggufName(_ name: String) -> String? { ggufIndex[name].flatMap { gguf?.tensors[$0].ggufName } }

    public func tensor(_ name: String) throws(CheckpointError) -> TensorView {
        if let gguf, let i = ggufIndex[name] {
            let info = ggufInfos[i]
            let t = gguf.tensors[i]
            let memory = try MappedFile(anonymous: info.byteCount, path: path) { (raw) throws(CheckpointError) in
                try gguf.copyFloats(t, into: raw.bindMemory(to: Float.self))
            }
            return TensorView(info: info, file: path, mapping: memory, fileRange: 0..<info.byteCount)
        }
        guard let fi = location[name] else {
            throw CheckpointError(.tensorNotFound, "\(path): the model has no tensor '\(name)'.")
        }
        return try files[fi].tensor(name)
    }

    /// Total bytes of tensor data.
    public var totalBytes: Int { tensorInfos.reduce(0) { $0 + $1.byteCount } }
    public var parameterCount: Int { tensorInfos.reduce(0) { $0 + $1.elementCount } }

    /// `config.json` as a JSON object, when the folder has one (a GGUF model: the one made from its metadata).
    public func config() throws(CheckpointError) -> [String: Any]? {
        if let gguf {
            var object = gguf.config.mapValues(\.json)
            object["torch_dtype"] = "float32"
            return object
        }
        let url = directory.appendingPathComponent("config.json")
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        do {
            let obj = try JSONSerialization.jsonObject(with: Data(contentsOf: url))
            guard let dict = obj as? [String: Any] else {
                throw CheckpointError(.notAModel, "\(url.path): expected a JSON object.")
            }
            return dict
        } catch let e as CheckpointError {
            throw e
        } catch {
            throw CheckpointError(.notAModel, "\(url.path): not valid JSON: \(error.localizedDescription).")
        }
    }

    /// Non-weight files a model folder carries and an output model should too.
    public static let supportFileNames = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "vocab.json", "tokenizer.model", "merges.txt", "added_tokens.json", "chat_template.jinja",
        "sentence_bert_config.json", "modules.json", "config_sentence_transformers.json",
    ]

    /// A support file's contents by name (`tokenizer.json`): generated for a GGUF model, else read from the folder;
    /// nil when there is none.
    public func supportFileData(_ name: String) -> Data? {
        if gguf != nil { return generatedFiles[name] }
        return try? Data(contentsOf: directory.appendingPathComponent(name))
    }

    /// Support files present in this model's folder (none for a GGUF model, whose folder may hold anything:
    /// see `generatedFiles`).
    public var supportFiles: [URL] {
        guard gguf == nil else { return [] }
        return Self.supportFileNames.map { directory.appendingPathComponent($0) }
            .filter { FileManager.default.fileExists(atPath: $0.path) }
    }

    /// Module folders a sentence-transformers model lists in `modules.json` (`1_Pooling`, `2_Normalize`, ...), which
    /// an output model needs to load in sentence-transformers. Paths that are not plain folder names are ignored.
    public var supportFolders: [URL] {
        guard gguf == nil else { return [] }
        let modules = directory.appendingPathComponent("modules.json")
        guard let data = try? Data(contentsOf: modules),
            let list = (try? JSONSerialization.jsonObject(with: data)) as? [[String: Any]]
        else { return [] }
        return list.compactMap { $0["path"] as? String }
            .filter { !$0.isEmpty && !$0.contains("/") && !$0.hasPrefix(".") }
            .map { directory.appendingPathComponent($0, isDirectory: true) }
            .filter { url in
                var isDir: ObjCBool = false
                return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
            }
    }
}
