import CheckpointIO
import Foundation
import TensorKernels

extension VocabularyAlignment {
    /// Builds the output vocabulary and permutations for `config` over `models` (opened, in `referencedModels`
    /// order). Returns nil when the config asks for no tokenizer merge.
    static func build(config: MergeConfig, models: [PlannedModel]) throws(MergeError) -> VocabularyAlignment? {
        guard let source = config.tokenizerSource, !models.isEmpty else { return nil }
        let file = config.file
        let line = config.tokenizerLine
        let refs = models.map(\.reference)
        let baseRef = config.baseModel ?? refs[0]
        guard let baseIndex = refs.firstIndex(of: baseRef) else {
            throw MergeError(
                .invalidConfig, "\(file):\(line): the base model '\(baseRef)' is not among the merged models.")
        }
        guard let baseRead = try TokenizerVocabulary.read(models[baseIndex].folder, reference: baseRef) else {
            throw MergeError(
                .checkpoint,
                "\(models[baseIndex].folder.directory.path): base model '\(baseRef)' has no tokenizer.json, which '\(source)' vocabulary merging needs."
            )
        }
        let base = try baseRead.stripped()
        // Every model's tokenizer; a model without tokenizer files is assumed to share the base's (as mergekit does).
        var vocabularies: [String: TokenizerVocabulary] = [baseRef: base]
        for (ref, m) in zip(refs, models) where ref != baseRef {
            vocabularies[ref] = try TokenizerVocabulary.read(m.folder, reference: ref)
        }

        var out: TokenizerVocabulary
        switch source {
        case "base":
            out = base
        case "union":
            out = base
            // mergekit iterates each model's get_vocab() (hash order in the tokenizers library); we take ids in
            // order, models in config order, so the result is reproducible (docs/merge.md).
            var plain: [String] = []
            var seenPlain = Set<String>()
            var addedInfo: [TokenizerVocabulary.AddedToken] = []
            var seenAdded = Set<String>()
            for ref in refs {
                guard let v = vocabularies[ref] else { continue }
                let addedSet = Set(v.added.map(\.content))
                for (tok, id) in v.vocab.sorted(by: { $0.value < $1.value })
                where id < v.vocabSize && !addedSet.contains(tok) {
                    if seenPlain.insert(tok).inserted { plain.append(tok) }
                }
                for a in v.added.sorted(by: { $0.id < $1.id }) where a.id < v.vocabSize {
                    if seenAdded.insert(a.content).inserted { addedInfo.append(a) }
                }
            }
            let baseVocab = base.vocab
            out.add(plain.filter { !seenAdded.contains($0) && baseVocab[$0] == nil }.map { .init(id: 0, content: $0) })
            out.add(addedInfo)
        default:
            guard let i = refs.firstIndex(of: source) else {
                throw MergeError(
                    .invalidConfig,
                    "\(file):\(line): tokenizer source '\(source)' is neither base, union nor one of the merged models (\(refs.joined(separator: ", ")))."
                )
            }
            var read = vocabularies[source]
            if read == nil { read = try TokenizerVocabulary.read(models[i].folder, reference: source) }
            guard let v = read else {
                throw MergeError(
                    .checkpoint,
                    "\(models[i].folder.directory.path): model '\(source)' has no tokenizer.json to use as tokenizer source."
                )
            }
            out = v
        }
        let existing = out.vocab
        out.add(config.tokenizerTokens.filter { existing[$0.token] == nil }.map { .init(id: 0, content: $0.token) })

        let outVocab = out.vocab
        var tokens = [String](repeating: "", count: outVocab.count)
        for (tok, id) in outVocab {
            guard id < tokens.count else {
                throw MergeError(
                    .checkpoint,
                    "\(out.file): token ids are not contiguous (id \(id) of '\(tok)' with \(tokens.count) tokens); the output vocabulary cannot be laid out."
                )
            }
            tokens[id] = tok
        }
        var rows = tokens.count
        if let m = config.padToMultipleOf, rows % m != 0 { rows = (rows / m + 1) * m }

        var permutations: [String: [Int]] = [:]
        var originals: [String: [String: Int]] = [:]
        var identity = rows == tokens.count && config.tokenizerTokens.isEmpty
        for ref in refs {
            let v = vocabularies[ref]
            let vocab = (v ?? base).vocab
            // A model sharing the base's tokenizer still has its own vocab_size (mergekit reads its config).
            let size =
                v?.vocabSize ?? Self.configVocabSize(models[refs.firstIndex(of: ref) ?? 0].folder) ?? base.vocabSize
            var p = [Int](repeating: -1, count: tokens.count)
            for (id, tok) in tokens.enumerated() {
                if let j = vocab[tok], j < size { p[id] = j }
                if p[id] != id { identity = false }
            }
            if size != tokens.count { identity = false }
            permutations[ref] = p
            originals[ref] = vocab
        }
        for s in config.tokenizerTokens {
            let refModel: String?
            switch s.source {
            case .model(let m): refModel = m
            case .modelToken(let m, _, _): refModel = m
            default: refModel = nil
            }
            if let m = refModel, !refs.contains(m) {
                throw MergeError(
                    .invalidConfig,
                    "\(file):\(s.line): token '\(s.token)' takes its embedding from '\(m)', which is not one of the merged models."
                )
            }
        }
        var settings: [String: TokenEmbeddingSetting] = [:]
        let ids = Dictionary(tokens.enumerated().map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        for s in config.tokenizerTokens {
            settings[s.token] = s
            // What `align` will need, checked now so that mistakes surface before any tensor is merged.
            guard let id = ids[s.token], s.force || refs.contains(where: { (permutations[$0]?[id] ?? -1) < 0 }) else {
                continue
            }
            switch s.source {
            case nil:
                throw MergeError(
                    .missingParameter,
                    "\(file):\(s.line): token '\(s.token)' needs a 'source': some model lacks it or force is set.")
            case .model(let m)?:
                if (permutations[m]?[id] ?? -1) < 0 {
                    throw MergeError(
                        .invalidConfig,
                        "\(file):\(s.line): token '\(s.token)' takes its row from '\(m)', which does not have the token."
                    )
                }
            case .modelToken(let m, _, let text?)?:
                if originals[m]?[text] == nil {
                    throw MergeError(
                        .invalidConfig,
                        "\(file):\(s.line): token '\(text)' (source of '\(s.token)') is not in the vocabulary of '\(m)'."
                    )
                }
            default:
                break
            }
        }

        let names = Set(models.flatMap { $0.folder.tensorNames }.filter { vocabularyTensorNames.contains($0) })
        // Tensors with more rows than the tokenizer uses (a resized embedding) are re-laid out too.
        for m in models where names.contains(where: { m.folder.info($0).map { $0.shape.first != rows } ?? false }) {
            identity = false
        }
        return VocabularyAlignment(
            tokens: tokens, rows: rows, permutations: permutations, originalVocabs: originals, settings: settings,
            baseModel: config.baseModel, output: out, tensorNames: names, isIdentity: identity, file: file)
    }
}
