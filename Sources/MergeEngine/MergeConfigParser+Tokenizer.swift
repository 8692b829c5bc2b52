import CheckpointIO
import Foundation
import Yams

extension MergeConfigParser {
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
                    throw fail(
                        .invalidConfig, file, v,
                        "'tokenizer.pad_to_multiple_of' must be a positive integer (at most 1048576).")
                }
                config.padToMultipleOf = n
            case "tokens":
                if case .scalar(let sc) = v, ["null", "~", ""].contains(sc.string) { continue }
                for (token, tn, spec) in try mapping(v, file: file, what: "'tokenizer.tokens'") {
                    config.tokenizerTokens.append(try tokenSetting(token, spec, line: line(tn), file: file))
                }
            default:
                throw fail(
                    .unknownKey, file, kn, "unknown key 'tokenizer.\(k)'; expected source, tokens, pad_to_multiple_of.")
            }
        }
    }

    /// One `tokenizer.tokens` entry: `{source: MODEL | {kind: zero} | {kind: model_token, model, token | token_id},
    /// force: bool}`.
    static func tokenSetting(_ token: String, _ node: Node, line l: Int, file: String) throws(MergeError)
        -> TokenEmbeddingSetting
    {
        var setting = TokenEmbeddingSetting(token: token, source: nil, force: false, line: l)
        let what = "'tokenizer.tokens.\(token)'"
        for (k, kn, v) in try mapping(node, file: file, what: what) {
            switch k {
            case "force":
                guard let b = v.bool else {
                    throw fail(.invalidConfig, file, v, "\(what).force must be true or false.")
                }
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
                            guard let n = sv.int, n >= 0 else {
                                throw fail(
                                    .invalidConfig, file, sv, "\(what).source.token_id must be a non-negative integer.")
                            }
                            tokenID = n
                        default:
                            throw fail(
                                .unknownKey, file, skn,
                                "unknown key '\(sk)' in \(what).source; expected kind, model, token, token_id.")
                        }
                    }
                    switch kind {
                    case "zero":
                        setting.source = .zero
                    case "model_token":
                        guard let model else {
                            throw fail(.missingParameter, file, v, "\(what).source (model_token) needs 'model'.")
                        }
                        guard (tokenID == nil) != (name == nil) else {
                            throw fail(
                                .invalidConfig, file, v,
                                "\(what).source (model_token) needs exactly one of 'token' and 'token_id'.")
                        }
                        setting.source = .modelToken(model: model, tokenID: tokenID, token: name)
                    default:
                        throw fail(
                            .invalidConfig, file, v,
                            "\(what).source.kind is '\(kind ?? "missing")'; expected zero or model_token.")
                    }
                default:
                    throw fail(
                        .invalidConfig, file, v, "\(what).source must be a model or {kind: zero | model_token, ...}.")
                }
            default:
                throw fail(.unknownKey, file, kn, "unknown key '\(k)' in \(what); expected source, force.")
            }
        }
        return setting
    }
}
