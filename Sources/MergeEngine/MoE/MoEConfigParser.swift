import CheckpointIO
import Foundation
import Yams

/// Reads a mergekit-moe YAML file into a `MoEConfig`, rejecting unknown keys, wrong types and the configurations
/// mergekit-moe refuses (`is_bad_config`), each error naming the line.
///
/// Stricter than mergekit on one point: pydantic ignores unknown keys, a typo (`positive_prompt:`) would then
/// silently route nothing; here it is an error.
public enum MoEConfigParser {
    static let topKeys = [
        "base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture",
    ]
    static let expertKeys = ["source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"]
    /// Experts (and prompts per expert) one file may list; real configs have 2-16 experts and a few prompts each.
    public static let maxExperts = 256
    public static let maxPrompts = 10_000

    /// Parses `yaml` (one document); `file` names it in messages.
    ///
    /// - Parameter allowAllSame: mergekit's `--i-understand-this-is-not-useful-without-training`: accept experts
    ///   that are all the same model.
    public static func parse(_ yaml: String, file: String, allowAllSame: Bool = false) throws(MergeError) -> MoEConfig {
        try MergeConfigParser.checkLimits(yaml, file: file)
        let node: Node
        do {
            var count = 0
            for _ in try Yams.compose_all(yaml: yaml) { count += 1 }
            guard count <= 1 else {
                throw MergeError(
                    .invalidConfig,
                    "\(file): a mergekit-moe configuration is one YAML document; this file holds \(count).")
            }
            // `compose` (not the lazy `compose_all`) reports a syntax error instead of ending early.
            guard let first = try Yams.compose(yaml: yaml) else {
                throw MergeError(.invalidConfig, "\(file): the file holds no configuration.")
            }
            node = first
        } catch let e as MergeError {
            throw e
        } catch {
            throw MergeError(.invalidConfig, "\(file): not valid YAML: \(error).")
        }
        var config = MoEConfig(baseModel: "", experts: [], file: file, yaml: yaml)
        var haveBase = false
        var haveExperts = false
        var expertsNode = node
        for (key, keyNode, value) in try MergeConfigParser.mapping(node, file: file, what: "the configuration") {
            switch key {
            case "base_model":
                config.baseModel = try MergeConfigParser.modelReference(value, file: file)
                haveBase = true
            case "experts":
                config.experts = try experts(value, file: file, key: key)
                haveExperts = true
                expertsNode = value
            case "shared_experts":
                if isNull(value) { continue }
                config.sharedExperts = try experts(value, file: file, key: key)
            case "gate_mode":
                let s = try MergeConfigParser.string(value, file: file, key: key)
                if s == "hidden_last" {  // mergekit: anything but hidden_avg takes the last token
                    config.gateMode = .hidden
                    continue
                }
                guard let mode = MoEGateMode(rawValue: s) else {
                    throw MergeConfigParser.fail(
                        .invalidConfig, file, value,
                        "'gate_mode' is '\(s)'; expected one of \(MoEGateMode.allCases.map(\.rawValue).joined(separator: ", "))."
                    )
                }
                config.gateMode = mode
            case "dtype":
                if isNull(value) { continue }
                config.dtype = try MergeConfigParser.dtype(value, file: file, key: key)
            case "experts_per_token":
                guard let n = value.int else {
                    throw MergeConfigParser.fail(.invalidConfig, file, value, "'experts_per_token' must be an integer.")
                }
                config.expertsPerToken = n
            case "architecture":
                if isNull(value) { continue }
                config.architecture = try MergeConfigParser.string(value, file: file, key: key)
            default:
                throw MergeConfigParser.fail(
                    .unknownKey, file, keyNode,
                    "unknown key '\(key)'; expected one of \(topKeys.joined(separator: ", ")).")
            }
        }
        guard haveBase else {
            throw MergeConfigParser.fail(.missingParameter, file, node, "the configuration has no 'base_model'.")
        }
        guard haveExperts else {
            throw MergeConfigParser.fail(.missingParameter, file, node, "the configuration has no 'experts'.")
        }
        try check(config, file: file, expertsLine: MergeConfigParser.line(expertsNode), allowAllSame: allowAllSame)
        return config
    }

    /// Reads and parses a configuration file.
    public static func load(_ configFile: String, allowAllSame: Bool = false) throws(MergeError) -> MoEConfig {
        try parse(MergeConfigParser.read(configFile), file: configFile, allowAllSame: allowAllSame)
    }

    static func isNull(_ node: Node) -> Bool {
        if case .scalar(let s) = node, s.tag == Tag(.null) || ["null", "~", ""].contains(s.string) { return true }
        return false
    }

    static func experts(_ node: Node, file: String, key: String) throws(MergeError) -> [MoEExpert] {
        guard case .sequence(let seq) = node else {
            throw MergeConfigParser.fail(
                .invalidConfig, file, node, "'\(key)' must be a list of {source_model, positive_prompts, ...}.")
        }
        guard seq.count <= maxExperts else {
            throw MergeConfigParser.fail(
                .limitExceeded, file, node, "'\(key)' lists \(seq.count) experts; at most \(maxExperts) are allowed.")
        }
        var out: [MoEExpert] = []
        for item in seq { out.append(try expert(item, file: file)) }
        return out
    }

    static func expert(_ node: Node, file: String) throws(MergeError) -> MoEExpert {
        var e = MoEExpert(sourceModel: "", line: MergeConfigParser.line(node))
        var haveModel = false
        for (key, keyNode, value) in try MergeConfigParser.mapping(node, file: file, what: "an expert") {
            switch key {
            case "source_model":
                e.sourceModel = try MergeConfigParser.modelReference(value, file: file)
                haveModel = true
            case "positive_prompts":
                e.positivePrompts = try prompts(value, file: file, key: key)
            case "negative_prompts":
                e.negativePrompts = try prompts(value, file: file, key: key)
            case "noise_scale":
                if isNull(value) { continue }
                // torch.randn_like draws noise in the tensor's own dtype, after the router's draws; not reproduced.
                throw MergeConfigParser.fail(
                    .unsupported, file, keyNode,
                    "'noise_scale' (random noise added to an expert's weights) is not supported; remove it, or add the noise to the expert model beforehand."
                )
            case "residual_scale":
                if isNull(value) { continue }
                guard let d = value.float ?? (value.int.map(Double.init)), d.isFinite else {
                    throw MergeConfigParser.fail(
                        .invalidConfig, file, value, "'residual_scale' must be a finite number.")
                }
                e.residualScale = d
            default:
                throw MergeConfigParser.fail(
                    .unknownKey, file, keyNode,
                    "unknown key '\(key)' in an expert; expected one of \(expertKeys.joined(separator: ", ")).")
            }
        }
        guard haveModel else {
            throw MergeConfigParser.fail(.missingParameter, file, node, "the expert has no 'source_model'.")
        }
        return e
    }

    static func prompts(_ node: Node, file: String, key: String) throws(MergeError) -> [String] {
        if isNull(node) { return [] }
        guard case .sequence(let seq) = node else {
            throw MergeConfigParser.fail(.invalidConfig, file, node, "'\(key)' must be a list of strings.")
        }
        guard seq.count <= maxPrompts else {
            throw MergeConfigParser.fail(
                .limitExceeded, file, node, "'\(key)' lists \(seq.count) prompts; at most \(maxPrompts) are allowed.")
        }
        var out: [String] = []
        for p in seq {
            guard case .scalar(let s) = p else {
                throw MergeConfigParser.fail(.invalidConfig, file, p, "every entry of '\(key)' must be a string.")
            }
            out.append(s.string)
        }
        return out
    }

    /// mergekit's `is_bad_config`, in its order (so the same file fails on the same check).
    static func check(_ c: MoEConfig, file: String, expertsLine: Int, allowAllSame: Bool) throws(MergeError) {
        func fail(_ code: MergeError.Code, _ line: Int, _ what: String) -> MergeError {
            MergeError(code, "\(file):\(line): \(what)")
        }
        guard !c.experts.isEmpty else { throw fail(.invalidConfig, expertsLine, "'experts' is empty.") }
        guard c.expertsPerToken >= 1 else {
            throw fail(
                .invalidConfig, expertsLine, "'experts_per_token' is \(c.expertsPerToken); it must be at least 1.")
        }
        guard c.experts.count >= c.expertsPerToken else {
            throw fail(
                .invalidConfig, expertsLine,
                "'experts' lists \(c.experts.count) experts, fewer than experts_per_token (\(c.expertsPerToken)).")
        }
        // mergekit exempts only 'random' from the prompt checks (uniform_random included); like mergekit, a single
        // expert counts as "all the same".
        if c.gateMode != .random {
            for (i, e) in c.experts.enumerated() where e.positivePrompts.isEmpty {
                throw fail(
                    .missingParameter, e.line,
                    "expert \(i) ('\(e.sourceModel)') has no positive_prompts, which gate_mode '\(c.gateMode.rawValue)' needs."
                )
            }
            let first = c.experts[0]
            if c.experts.dropFirst().allSatisfy({
                $0.positivePrompts == first.positivePrompts && $0.negativePrompts == first.negativePrompts
            }) {
                throw fail(
                    .invalidConfig, expertsLine,
                    "every expert has the same positive and negative prompts, so the router cannot tell them apart; give each expert prompts that reflect what it should receive."
                )
            }
            if !allowAllSame, c.experts.allSatisfy({ $0.sourceModel == first.sourceModel }) {
                throw fail(
                    .invalidConfig, expertsLine,
                    "every expert is the model '\(first.sourceModel)': the mixture would cost more and answer the same (allow it only to train the mixture afterwards)."
                )
            }
        }
        if !c.sharedExperts.isEmpty {
            let withPrompts = c.sharedExperts.filter { !$0.positivePrompts.isEmpty }.count
            guard withPrompts == 0 || withPrompts == c.sharedExperts.count else {
                throw fail(
                    .invalidConfig, c.sharedExperts[0].line,
                    "either every shared expert has positive_prompts or none has (mergekit-moe's rule).")
            }
        }
    }
}
