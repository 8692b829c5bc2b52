import CheckpointIO
import Foundation
import Yams

/// Reads mergekit YAML (one or several `---` documents) into `MergeConfig`s, rejecting unknown keys and methods
/// with the line they are on.
public enum MergeConfigParser {
    static let topKeys: Set<String> = [
        "merge_method", "base_model", "models", "slices", "parameters", "dtype", "out_dtype", "tokenizer_source",
        "tokenizer", "chat_template", "name", "modules",
    ]

    /// Sizes a hostile configuration cannot push past (docs/robustness.md). Real mergekit configs are a few KB,
    /// nest 6-8 levels and name a handful of models.
    public enum Limits {
        /// Bytes of a configuration file.
        public static let maxBytes = 1 << 20
        /// Nesting of mappings and sequences; bounds the recursion of the YAML composer and of this parser.
        public static let maxDepth = 64
        /// YAML nodes once aliases are expanded: bounds "billion laughs" alias bombs, which expand exponentially.
        public static let maxNodes = 100_000
        /// Documents (`---`) in one file.
        public static let maxDocuments = 100
        /// Entries of `models:`, slices of `slices:`, and sources of one slice.
        public static let maxModels = 1000
    }

    /// Reads a configuration file, refusing one larger than `Limits.maxBytes` before reading it.
    public static func read(_ configFile: String) throws(MergeError) -> String {
        let size = (try? FileManager.default.attributesOfItem(atPath: configFile)[.size] as? Int) ?? nil
        if let size, size > Limits.maxBytes {
            throw MergeError(
                .limitExceeded, "\(configFile): the configuration has \(size) bytes; at most \(Limits.maxBytes) are allowed.")
        }
        do {
            return try String(contentsOfFile: configFile, encoding: .utf8)
        } catch {
            throw MergeError(.invalidConfig, "\(configFile): cannot read the configuration: \(error.localizedDescription).")
        }
    }

    /// Parses every document of `yaml`. `file` names the source in messages.
    public static func parse(_ yaml: String, file: String) throws(MergeError) -> [MergeConfig] {
        try checkLimits(yaml, file: file)
        let nodes: [Node]
        do {
            var all: [Node] = []
            for n in try Yams.compose_all(yaml: yaml) { all.append(n) }
            nodes = all
        } catch {
            throw MergeError(.invalidConfig, "\(file): not valid YAML: \(error).")
        }
        guard !nodes.isEmpty else { throw MergeError(.invalidConfig, "\(file): the file holds no configuration.") }
        let docTexts = splitDocuments(yaml)
        var configs: [MergeConfig] = []
        for (i, node) in nodes.enumerated() {
            let text = i < docTexts.count ? docTexts[i] : yaml
            configs.append(try parseDocument(node, file: file, text: text))
        }
        var names = Set<String>()
        for c in configs {
            if let n = c.name, !names.insert(n).inserted {
                throw MergeError(.invalidConfig, "\(file): the name '\(n)' is used by two documents.")
            }
        }
        return configs
    }

    /// The text of each `---`-separated document (for model cards).
    static func splitDocuments(_ yaml: String) -> [String] {
        var docs: [String] = []
        var current: [Substring] = []
        for line in yaml.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("---") {
                if current.contains(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) {
                    docs.append(current.joined(separator: "\n"))
                }
                current = []
            } else {
                current.append(line)
            }
        }
        if current.contains(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) {
            docs.append(current.joined(separator: "\n"))
        }
        return docs
    }

    static func line(_ n: Node) -> Int { n.mark?.line ?? 0 }

    static func fail(_ code: MergeError.Code, _ file: String, _ node: Node, _ what: String) -> MergeError {
        MergeError(code, "\(file):\(line(node)): \(what)")
    }

    static func mapping(_ node: Node, file: String, what: String) throws(MergeError) -> [(key: String, keyNode: Node, value: Node)] {
        guard case .mapping(let m) = node else {
            throw fail(.invalidConfig, file, node, "\(what) must be a mapping of keys to values.")
        }
        var out: [(key: String, keyNode: Node, value: Node)] = []
        var seen = Set<String>()
        for (k, v) in m {
            guard let key = k.string else { throw fail(.invalidConfig, file, k, "a key in \(what) is not a string.") }
            guard seen.insert(key).inserted else {
                throw fail(.invalidConfig, file, k, "the key '\(key)' appears twice in \(what).")
            }
            out.append((key, k, v))
        }
        return out
    }

    static func string(_ node: Node, file: String, key: String) throws(MergeError) -> String {
        guard case .scalar(let s) = node else {
            throw fail(.invalidConfig, file, node, "'\(key)' must be a string.")
        }
        return s.string
    }

    static func dtype(_ node: Node, file: String, key: String) throws(MergeError) -> DType {
        let s = try string(node, file: file, key: key)
        guard let d = DType(userName: s), d.isConvertibleFloat else {
            throw fail(.invalidConfig, file, node, "'\(key)' is '\(s)'; expected float32, float16, bfloat16 or float64.")
        }
        return d
    }

    static func parseDocument(_ root: Node, file: String, text: String) throws(MergeError) -> MergeConfig {
        var method: (String, Int)?
        var config = MergeConfig(mergeMethod: "", mergeMethodLine: line(root), yaml: text, file: file)
        for (key, keyNode, value) in try mapping(root, file: file, what: "the configuration") {
            switch key {
            case "merge_method":
                method = (try string(value, file: file, key: key), line(value))
            case "base_model":
                config.baseModel = try modelReference(value, file: file)
            case "models":
                guard case .sequence(let seq) = value else {
                    throw fail(.invalidConfig, file, value, "'models' must be a list of {model, parameters}.")
                }
                guard seq.count <= Limits.maxModels else {
                    throw fail(.limitExceeded, file, value, "'models' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
                }
                var models: [SourceDefinition] = []
                for item in seq { models.append(try source(item, file: file, inSlice: false)) }
                config.models = models
            case "slices":
                guard case .sequence(let seq) = value else {
                    throw fail(.invalidConfig, file, value, "'slices' must be a list of {sources, parameters}.")
                }
                guard seq.count <= Limits.maxModels else {
                    throw fail(.limitExceeded, file, value, "'slices' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
                }
                var slices: [SliceDefinition] = []
                for item in seq { slices.append(try slice(item, file: file)) }
                config.slices = slices
            case "parameters":
                config.parameters = try parameterBlock(value, file: file)
            case "dtype":
                config.dtype = try dtype(value, file: file, key: key)
            case "out_dtype":
                config.outDType = try dtype(value, file: file, key: key)
            case "tokenizer_source":
                if config.tokenizerSource != nil {
                    throw fail(.invalidConfig, file, keyNode, "'tokenizer_source' and 'tokenizer' are both set; use one (as mergekit requires).")
                }
                config.tokenizerSource = try string(value, file: file, key: key)
                config.tokenizerLine = line(keyNode)
            case "tokenizer":
                if config.tokenizerSource != nil {
                    throw fail(.invalidConfig, file, keyNode, "'tokenizer_source' and 'tokenizer' are both set; use one (as mergekit requires).")
                }
                try tokenizerBlock(value, file: file, into: &config)
                config.tokenizerLine = line(keyNode)
            case "chat_template":
                config.chatTemplate = try string(value, file: file, key: key)
            case "name":
                config.name = try string(value, file: file, key: key)
            case "modules":
                throw fail(.unknownKey, file, keyNode, "'modules' (multi-module architectures) is not supported; use 'models' or 'slices'.")
            default:
                throw fail(.unknownKey, file, keyNode,
                    "unknown key '\(key)'; expected one of \(topKeys.sorted().joined(separator: ", ")).")
            }
        }
        guard let method else {
            throw fail(.missingParameter, file, root, "the configuration has no 'merge_method'.")
        }
        config.mergeMethod = method.0
        config.mergeMethodLine = method.1
        guard MergeMethodRegistry.method(named: method.0) != nil else {
            throw MergeError(.unknownMethod,
                "\(file):\(method.1): unknown merge_method '\(method.0)'; expected one of \(MergeMethodRegistry.names.joined(separator: ", ")).")
        }
        let kinds = [config.models != nil, config.slices != nil].filter { $0 }.count
        guard kinds == 1 else {
            throw fail(.invalidConfig, file, root, "exactly one of 'models' or 'slices' must be present.")
        }
        if let m = config.models, m.isEmpty {
            throw fail(.invalidConfig, file, root, "'models' is empty.")
        }
        if let s = config.slices, s.isEmpty {
            throw fail(.invalidConfig, file, root, "'slices' is empty.")
        }
        return config
    }

    /// A model reference: a string (`org/name`, a path, or `model+lora`, which `MergePlan` merges first) or
    /// `{model: ...}`.
    static func modelReference(_ node: Node, file: String) throws(MergeError) -> String {
        try string(node, file: file, key: "model")
    }

    static func source(_ node: Node, file: String, inSlice: Bool) throws(MergeError) -> SourceDefinition {
        var def = SourceDefinition(model: "", line: line(node))
        var haveModel = false
        for (key, keyNode, value) in try mapping(node, file: file, what: inSlice ? "a slice source" : "a model entry") {
            switch key {
            case "model":
                def.model = try modelReference(value, file: file)
                haveModel = true
            case "parameters":
                def.parameters = try parameterBlock(value, file: file)
            case "layer_range" where inSlice:
                guard case .sequence(let seq) = value, seq.count == 2, let a = seq[0].int, let b = seq[1].int, a >= 0,
                    b >= a
                else {
                    throw fail(.invalidConfig, file, value, "'layer_range' must be [start, end) with 0 <= start <= end.")
                }
                def.layerRange = a..<b
            default:
                let allowed = inSlice ? "model, layer_range, parameters" : "model, parameters"
                throw fail(.unknownKey, file, keyNode, "unknown key '\(key)'; expected one of \(allowed).")
            }
        }
        guard haveModel else { throw fail(.missingParameter, file, node, "the entry has no 'model'.") }
        if inSlice, def.layerRange == nil {
            throw fail(.missingParameter, file, node, "the slice source '\(def.model)' has no 'layer_range'.")
        }
        return def
    }

    static func slice(_ node: Node, file: String) throws(MergeError) -> SliceDefinition {
        var def = SliceDefinition(sources: [], line: line(node))
        var haveSources = false
        for (key, keyNode, value) in try mapping(node, file: file, what: "a slice") {
            switch key {
            case "sources":
                guard case .sequence(let seq) = value, !seq.isEmpty else {
                    throw fail(.invalidConfig, file, value, "'sources' must be a non-empty list.")
                }
                guard seq.count <= Limits.maxModels else {
                    throw fail(.limitExceeded, file, value, "'sources' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
                }
                for s in seq { def.sources.append(try source(s, file: file, inSlice: true)) }
                haveSources = true
            case "base_model":
                def.baseModel = try modelReference(value, file: file)
            case "parameters":
                def.parameters = try parameterBlock(value, file: file)
            default:
                throw fail(.unknownKey, file, keyNode, "unknown key '\(key)'; expected one of sources, base_model, parameters.")
            }
        }
        guard haveSources else { throw fail(.missingParameter, file, node, "the slice has no 'sources'.") }
        let lengths = Set(def.sources.compactMap { $0.layerRange?.count })
        guard lengths.count == 1 else {
            throw fail(.invalidConfig, file, node, "all sources of a slice must have the same number of layers; got \(lengths.sorted()).")
        }
        return def
    }

    static func parameterBlock(_ node: Node, file: String) throws(MergeError) -> ParameterBlock {
        var block = ParameterBlock()
        if case .scalar(let s) = node, s.string.isEmpty || s.string == "null" || s.string == "~" { return block }
        for (key, keyNode, value) in try mapping(node, file: file, what: "'parameters'") {
            block.settings[key] = try setting(value, file: file, name: key)
            block.lines[key] = line(keyNode)
        }
        return block
    }

    static func scalarValue(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterValue {
        guard case .scalar(let s) = node else {
            throw fail(.invalidConfig, file, node, "parameter '\(name)' must be a number, a boolean, a list or {filter, value}.")
        }
        if s.tag == Tag(.bool) || ["true", "false", "True", "False"].contains(s.string), let b = node.bool {
            return .bool(b)
        }
        if let d = node.float ?? Double(s.string) { return .number(d) }
        throw fail(.invalidConfig, file, node, "parameter '\(name)' is '\(s.string)'; expected a number or a boolean.")
    }

    static func setting(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterSetting {
        switch node {
        case .scalar:
            return .value(try scalarValue(node, file: file, name: name))
        case .sequence(let seq):
            if seq.allSatisfy({ if case .scalar = $0 { true } else { false } }) {
                var values: [ParameterValue] = []
                for n in seq { values.append(try scalarValue(n, file: file, name: name)) }
                return .gradient(values)
            }
            var conds: [ParameterSetting.Conditional] = []
            for n in seq { conds.append(try conditional(n, file: file, name: name)) }
            return .conditional(conds)
        case .mapping:
            return .conditional([try conditional(node, file: file, name: name)])
        case .alias:
            throw fail(.invalidConfig, file, node, "YAML aliases are not supported in parameter '\(name)'.")
        }
    }

    static func conditional(_ node: Node, file: String, name: String) throws(MergeError) -> ParameterSetting.Conditional {
        var filter: String?
        var value: ParameterSetting?
        for (key, keyNode, v) in try mapping(node, file: file, what: "a conditional value of '\(name)'") {
            switch key {
            case "filter": filter = try string(v, file: file, key: "filter")
            case "value":
                if case .mapping = v {
                    throw fail(.invalidConfig, file, v, "the value of a conditional '\(name)' must be a number, boolean or list.")
                }
                value = try setting(v, file: file, name: name)
            default:
                throw fail(.unknownKey, file, keyNode, "unknown key '\(key)' in a conditional value of '\(name)'; expected filter, value.")
            }
        }
        guard let value else {
            throw fail(.missingParameter, file, node, "a conditional value of '\(name)' has no 'value'.")
        }
        return .init(filter: filter, value: value)
    }

    /// mergekit's `tokenizer: {source, tokens, pad_to_multiple_of}`; `source` defaults to `union` as in mergekit.
    static func tokenizerBlock(_ node: Node, file: String, into config: inout MergeConfig) throws(MergeError) {
        config.tokenizerSource = "union"
        for (k, kn, v) in try mapping(node, file: file, what: "'tokenizer'") {
            switch k {
            case "source":
                config.tokenizerSource = try string(v, file: file, key: "tokenizer.source")
            case "pad_to_multiple_of":
                if case .scalar(let sc) = v, ["null", "~", ""].contains(sc.string) { continue }
                guard let n = v.int, n > 0, n <= 1 << 20 else {
                    throw fail(.invalidConfig, file, v, "'tokenizer.pad_to_multiple_of' must be a positive integer (at most 1048576).")
                }
                config.padToMultipleOf = n
            case "tokens":
                if case .scalar(let sc) = v, ["null", "~", ""].contains(sc.string) { continue }
                for (token, tn, spec) in try mapping(v, file: file, what: "'tokenizer.tokens'") {
                    config.tokenizerTokens.append(try tokenSetting(token, spec, line: line(tn), file: file))
                }
            default:
                throw fail(.unknownKey, file, kn, "unknown key 'tokenizer.\(k)'; expected source, tokens, pad_to_multiple_of.")
            }
        }
    }

    /// One `tokenizer.tokens` entry: `{source: MODEL | {kind: zero} | {kind: model_token, model, token | token_id},
    /// force: bool}`.
    static func tokenSetting(_ token: String, _ node: Node, line l: Int, file: String) throws(MergeError) -> TokenEmbeddingSetting {
        var setting = TokenEmbeddingSetting(token: token, source: nil, force: false, line: l)
        let what = "'tokenizer.tokens.\(token)'"
        for (k, kn, v) in try mapping(node, file: file, what: what) {
            switch k {
            case "force":
                guard let b = v.bool else { throw fail(.invalidConfig, file, v, "\(what).force must be true or false.") }
                setting.force = b
            case "source":
                switch v {
                case .scalar:
                    setting.source = .model(try modelReference(v, file: file))
                case .mapping:
                    var kind: String?
                    var model: String?
                    var tokenID: Int?
                    var name: String?
                    for (sk, skn, sv) in try mapping(v, file: file, what: "\(what).source") {
                        switch sk {
                        case "kind": kind = try string(sv, file: file, key: "kind")
                        case "model": model = try modelReference(sv, file: file)
                        case "token": name = try string(sv, file: file, key: "token")
                        case "token_id":
                            guard let n = sv.int, n >= 0 else { throw fail(.invalidConfig, file, sv, "\(what).source.token_id must be a non-negative integer.") }
                            tokenID = n
                        default:
                            throw fail(.unknownKey, file, skn, "unknown key '\(sk)' in \(what).source; expected kind, model, token, token_id.")
                        }
                    }
                    switch kind {
                    case "zero":
                        setting.source = .zero
                    case "model_token":
                        guard let model else { throw fail(.missingParameter, file, v, "\(what).source (model_token) needs 'model'.") }
                        guard (tokenID == nil) != (name == nil) else {
                            throw fail(.invalidConfig, file, v, "\(what).source (model_token) needs exactly one of 'token' and 'token_id'.")
                        }
                        setting.source = .modelToken(model: model, tokenID: tokenID, token: name)
                    default:
                        throw fail(.invalidConfig, file, v, "\(what).source.kind is '\(kind ?? "missing")'; expected zero or model_token.")
                    }
                default:
                    throw fail(.invalidConfig, file, v, "\(what).source must be a model or {kind: zero | model_token, ...}.")
                }
            default:
                throw fail(.unknownKey, file, kn, "unknown key '\(k)' in \(what); expected source, force.")
            }
        }
        return setting
    }
}
