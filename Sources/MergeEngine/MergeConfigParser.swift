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
                .limitExceeded,
                "\(configFile): the configuration has \(size) bytes; at most \(Limits.maxBytes) are allowed.")
        }
        do {
            return try String(contentsOfFile: configFile, encoding: .utf8)
        } catch {
            throw MergeError(
                .invalidConfig, "\(configFile): cannot read the configuration: \(error.localizedDescription).")
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

    static func mapping(_ node: Node, file: String, what: String) throws(MergeError) -> [(
        key: String, keyNode: Node, value: Node
    )] {
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
            throw fail(
                .invalidConfig, file, node, "'\(key)' is '\(s)'; expected float32, float16, bfloat16 or float64.")
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
                    throw fail(
                        .limitExceeded, file, value,
                        "'models' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
                }
                var models: [SourceDefinition] = []
                for item in seq { models.append(try source(item, file: file, inSlice: false)) }
                config.models = models
            case "slices":
                guard case .sequence(let seq) = value else {
                    throw fail(.invalidConfig, file, value, "'slices' must be a list of {sources, parameters}.")
                }
                guard seq.count <= Limits.maxModels else {
                    throw fail(
                        .limitExceeded, file, value,
                        "'slices' lists \(seq.count) entries; at most \(Limits.maxModels) are allowed.")
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
                    throw fail(
                        .invalidConfig, file, keyNode,
                        "'tokenizer_source' and 'tokenizer' are both set; use one (as mergekit requires).")
                }
                config.tokenizerSource = try string(value, file: file, key: key)
                config.tokenizerLine = line(keyNode)
            case "tokenizer":
                if config.tokenizerSource != nil {
                    throw fail(
                        .invalidConfig, file, keyNode,
                        "'tokenizer_source' and 'tokenizer' are both set; use one (as mergekit requires).")
                }
                try tokenizerBlock(value, file: file, into: &config)
                config.tokenizerLine = line(keyNode)
            case "chat_template":
                config.chatTemplate = try string(value, file: file, key: key)
            case "name":
                config.name = try string(value, file: file, key: key)
            case "modules":
                throw fail(
                    .unknownKey, file, keyNode,
                    "'modules' (multi-module architectures) is not supported; use 'models' or 'slices'.")
            default:
                throw fail(
                    .unknownKey, file, keyNode,
                    "unknown key '\(key)'; expected one of \(topKeys.sorted().joined(separator: ", ")).")
            }
        }
        guard let method else {
            throw fail(.missingParameter, file, root, "the configuration has no 'merge_method'.")
        }
        config.mergeMethod = method.0
        config.mergeMethodLine = method.1
        guard MergeMethodRegistry.method(named: method.0) != nil else {
            throw MergeError(
                .unknownMethod,
                "\(file):\(method.1): unknown merge_method '\(method.0)'; expected one of \(MergeMethodRegistry.names.joined(separator: ", "))."
            )
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
}
