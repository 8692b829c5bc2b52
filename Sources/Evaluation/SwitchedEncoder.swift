import CheckpointIO
import Foundation
import Synchronization
import TaskSwitches

/// A base encoder resident once in memory with T-Switch packs applied in place: fixed packs (`--pack`), or
/// per-batch weights chosen by Auto-Switch (`--auto-switch`).
///
/// Switching goes through `SwitchableModel.withActivated`: the packs are applied, an encoder reads the switched
/// resident weights in place (only the stacked Q, K, V matrices are copied, 10 MB for MiniLM instead of the whole
/// 90 MB model), and the model is switched back, all as one serialized step. Concurrent callers with different
/// mixes therefore never see each other's weights; they take turns.
public final class SwitchedEncoder: Sendable {
    public let model: SwitchableModel
    public let config: BertConfig
    public let tokenizer: any TextTokenizer
    private let loader: EncoderLoader
    private let shapes: [String: [Int]]
    /// The encoder mixed batches run on, over the resident base: built on first use and kept. It borrows the base's
    /// buffers, which never move, and is used only inside `withMixes`, where they hold the base; keeping it spares
    /// each call the stacked Q, K, V copy and fresh workspaces (a server's small batches spent about a third of
    /// their time faulting in that new memory).
    private let mixedEncoder = Mutex<(any EncoderModel)?>(nil)

    /// Loads the base model folder (weights, `config.json`, tokenizer files).
    public init(basePath: String) throws {
        let folder = try ModelFolder(path: basePath)
        loader = try EncoderLoader(folder: folder)
        config = loader.config
        tokenizer = loader.tokenizer
        model = try SwitchableModel(base: folder)
        shapes = Dictionary(uniqueKeysWithValues: model.specs.map { ($0.name, $0.shape) })
    }

    /// An encoder over a copy of the weights as they are now (after `model.activate`); it owns its weights and
    /// may be kept. `withEncoder` avoids the copy.
    public func currentEncoder() throws(EvaluationError) -> SentenceEncoder {
        let encoder = try loader.encoder(source: model.source) { name in
            let full = loader.checkpointName(name)
            guard let shape = shapes[full] else { return nil }
            guard let values = model.withTensor(full, { Array($0) }) else { return nil }
            return (shape, values)
        }
        return SentenceEncoder(tokenizer: tokenizer, encoder: encoder)
    }

    /// Runs `body` with an encoder over the base with `packs` applied, reading the switched weights in place; the
    /// model is switched back when `body` returns. The encoder is valid only inside `body`: do not keep it.
    ///
    /// - Throws: `SwitchError` when a pack does not fit the base, `EvaluationError` when a tensor the encoder
    ///   needs is missing or misshapen, or what `body` throws.
    public func withEncoder<R>(
        _ packs: [(pack: SwitchPack, weight: Float)], _ body: (SentenceEncoder) throws -> R
    ) throws -> R {
        try model.withActivated(packs) { weights in
            let encoder = try loader.encoder(source: model.source) {
                (name) throws(EvaluationError) -> (shape: [Int], weight: EncoderWeight)? in
                let full = loader.checkpointName(name)
                guard let shape = shapes[full], let values = weights.tensor(full) else { return nil }
                return (shape, EncoderWeight(borrowing: values))
            }
            return try body(SentenceEncoder(tokenizer: tokenizer, encoder: encoder))
        }
    }

    /// Embeddings of `texts` with every pack applied at weight 1 (no pack: the base model).
    public func embed(_ texts: [String], packs: [SwitchPack], maxLength: Int, batchSize: Int) throws -> [Float] {
        try withEncoder(packs.map { ($0, 1) }) { $0.embed(texts, maxLength: maxLength, batchSize: batchSize) }
    }

    /// Embeddings of a mixed batch: text `i` on the base plus `mixes[i]` (one weight per pack of `packs`; all zero
    /// is the base alone), every text in one pass however many distinct mixes there are (`MixedForward`).
    /// Results equal embedding each text alone with its mix applied (`withEncoder`) within f32 rounding of the
    /// products' row blocking; the switched weights themselves are bit for bit the same.
    ///
    /// - Throws: `SwitchError` when a pack does not fit the base or a weight is not finite; `EvaluationError` when
    ///   a tensor the encoder needs is missing or misshapen.
    ///
    /// - Parameters:
    ///   - batching: `.regroup` embeds the texts of each distinct mix together instead, the whole model switched
    ///     in place per mix (the earlier way, kept as the benchmark's peer); the same results.
    ///   - progress: texts done so far.
    public func embed(
        _ texts: [String], packs: [SwitchPack], mixes: [[Double]], maxLength: Int, batchSize: Int,
        batching: MixedBatching = .mixed, normalize: Bool = false, progress: ((Int) -> Void)? = nil
    ) throws -> [Float] {
        precondition(mixes.count == texts.count, "one mix per text")
        if batching == .regroup {
            return try regrouped(
                texts, packs: packs, mixes: mixes, maxLength: maxLength, batchSize: batchSize, normalize: normalize,
                progress: progress)
        }
        var groupOf: [[Double]: Int] = [:]
        var distinct: [[(pack: SwitchPack, weight: Float)]] = []
        var groups: [Int] = []
        groups.reserveCapacity(texts.count)
        for w in mixes {
            precondition(w.count == packs.count, "one weight per pack")
            if let g = groupOf[w] {
                groups.append(g)
                continue
            }
            groupOf[w] = distinct.count
            groups.append(distinct.count)
            distinct.append(w.enumerated().filter { $0.element != 0 }.map { (packs[$0.offset], Float($0.element)) })
        }
        return try model.withMixes(distinct) { switches in
            let encoder = try keptEncoder(switches)
            guard encoder is any MixedEncoderModel else {
                throw EvaluationError(
                    .unsupportedModel,
                    "\(model.source): the \(loader.family.modelType) encoder does not run mixed batches.")
            }
            return SentenceEncoder(tokenizer: tokenizer, encoder: encoder).embed(
                texts, groups: groups,
                weights: SwitchedGroupWeights(
                    switches: switches, loader: loader, layout: batching == .mixedLayer ? .layerPerGroup : .tileFused),
                maxLength: maxLength, batchSize: batchSize, normalize: normalize, progress: progress)
        }
    }

    /// The kept encoder over the resident base (`mixedEncoder`), built on first use; only valid inside
    /// `model.withMixes`, which lends `switches`.
    private func keptEncoder(_ switches: MixedSwitches) throws(EvaluationError) -> any EncoderModel {
        try mixedEncoder.withLock { (kept) throws(EvaluationError) -> any EncoderModel in
            if let kept { return kept }
            let made = try loader.encoder(source: model.source) {
                (name) throws(EvaluationError) -> (shape: [Int], weight: EncoderWeight)? in
                let full = loader.checkpointName(name)
                guard let shape = shapes[full], let values = switches.base(full) else { return nil }
                return (shape, EncoderWeight(borrowing: values))
            }
            kept = made
            return made
        }
    }

    /// The base's sentence embeddings of `texts` (not normalized) and the features `router` reads
    /// (`TaskRouter.featureLayers`, at unit length when `wantsUnitFeatures`), from one base pass on the kept
    /// encoder: what a server routes `auto` texts on and answers the ones routed to no task with.
    ///
    /// With no router layers the features are the embeddings themselves (the mixed path with every text on the
    /// base, as `embed(_:packs:mixes:…)` runs it); with layers the pass pools them next to the last layer
    /// (`SentenceEncoder.embeddingAndRouterFeatures`), as many passes as without.
    ///
    /// - Throws: `EvaluationError` `.incompatible` when a router layer is past the model's last or the encoder
    ///   pools no layers; `SwitchError` from the model lock's bookkeeping.
    public func baseFeatures(
        _ texts: [String], for router: any TaskRouter, maxLength: Int, batchSize: Int
    ) throws -> (embedding: [Float], routing: [Float]) {
        let layers = router.featureLayers
        guard !layers.isEmpty else {
            let embedding = try embed(
                texts, packs: [], mixes: Array(repeating: [], count: texts.count), maxLength: maxLength,
                batchSize: batchSize)
            var routing = embedding
            if router.wantsUnitFeatures { MeanPooling.normalizeRows(&routing, width: config.hiddenSize) }
            return (embedding, routing)
        }
        return try model.withMixes([[]]) { switches in
            try SentenceEncoder(tokenizer: tokenizer, encoder: try keptEncoder(switches)).embeddingAndRouterFeatures(
                texts, layers: layers, maxLength: maxLength, batchSize: batchSize)
        }
    }

    /// Regrouping: one in-place switch per distinct mix, in order of first use, its texts embedded together.
    private func regrouped(
        _ texts: [String], packs: [SwitchPack], mixes: [[Double]], maxLength: Int, batchSize: Int, normalize: Bool,
        progress: ((Int) -> Void)?
    ) throws -> [Float] {
        var groups: [[Double]: [Int]] = [:]
        var order: [[Double]] = []
        for (i, w) in mixes.enumerated() {
            precondition(w.count == packs.count, "one weight per pack")
            if groups[w] == nil { order.append(w) }
            groups[w, default: []].append(i)
        }
        let hidden = config.hiddenSize
        var features = [Float](repeating: 0, count: texts.count * hidden)
        var done = 0
        for w in order {
            let members = groups[w] ?? []
            let active = w.enumerated().filter { $0.element != 0 }.map { (packs[$0.offset], Float($0.element)) }
            let part = try withEncoder(active) {
                $0.embed(members.map { texts[$0] }, maxLength: maxLength, batchSize: batchSize, normalize: normalize)
            }
            for (row, i) in members.enumerated() {
                features.replaceSubrange(
                    (i * hidden)..<((i + 1) * hidden), with: part[(row * hidden)..<((row + 1) * hidden)])
            }
            done += members.count
            progress?(done)
        }
        return features
    }

    /// How texts with different mixes are embedded: in mixed batches (each batch one pass, every text on its own
    /// mix), or regrouped by mix with the whole model switched per group (the earlier way; kept as the benchmark's
    /// peer).
    public enum MixedBatching: String, Sendable, CaseIterable {
        /// One pass, tile-fused switching (`MixedLayout.tileFused`).
        case mixed
        /// One pass, the whole layer written per group (`MixedLayout.layerPerGroup`; the earlier mixed path).
        case mixedLayer = "mixed-layer"
        case regroup
    }

    /// The outcome of routing: features and the switch weights each example was embedded with.
    public struct Routed: Sendable {
        public let features: [Float]
        /// Per example, the weight of each pack (in `packs` order).
        public let weights: [[Double]]
    }

    /// Auto-Switch: routes each example by its base-model features to weights over `packs` (k-NN over the query
    /// set), then embeds them in mixed batches, each text on its own weights (`batching`).
    ///
    /// - Throws: `EvaluationError` `.incompatible` when a query-set task has no pack or the dimensions differ;
    ///   `SwitchError` from the router or from applying a pack.
    public func embedRouted(
        _ texts: [String], packs: [SwitchPack], router: any TaskRouter, mode: AutoSwitchRouter.Mode,
        routeBatch: Int, maxLength: Int, batchSize: Int, batching: MixedBatching = .mixed
    ) throws -> Routed {
        let tasks = router.routedTasks
        var packIndex: [Int] = []
        for t in tasks {
            guard let i = packs.firstIndex(where: { $0.task == t }) else {
                throw EvaluationError(
                    .incompatible,
                    "The router routes to task '\(t)', but none of the packs given is for that task (packs: \(packs.map(\.task)))."
                )
            }
            packIndex.append(i)
        }
        let layers = router.featureLayers
        let width = max(1, layers.count) * config.hiddenSize
        guard router.featureDimension == width else {
            throw EvaluationError(
                .incompatible,
                "The router takes \(router.featureDimension)-dimensional features; the model's are \(width) (hidden size \(config.hiddenSize) × \(max(1, layers.count)) layers)."
            )
        }
        let base = try withEncoder([]) {
            try $0.routerFeatures(
                texts, layers: layers, normalize: router.wantsUnitFeatures, maxLength: maxLength, batchSize: batchSize)
        }
        // A router with lexical evidence reads the texts too (full texts: the n-grams are not truncated).
        let shares = try router.weights(
            QuerySet(features: base, count: texts.count, dimension: width, labels: nil, tasks: []),
            texts: router.usesTexts ? texts : nil, mode: mode, batchSize: routeBatch)
        // Task order of the query set -> pack order.
        let weights: [[Double]] = shares.map { row in
            var w = [Double](repeating: 0, count: packs.count)
            for (k, s) in row.enumerated() { w[packIndex[k]] += s }
            return w
        }
        let features = try embed(
            texts, packs: packs, mixes: weights, maxLength: maxLength, batchSize: batchSize, batching: batching)
        return Routed(features: features, weights: weights)
    }
}

/// A mixed batch's groups as the encoder names its tensors: `MixedSwitches` under the checkpoint's prefix.
private struct SwitchedGroupWeights: GroupWeights {
    let switches: MixedSwitches
    let loader: EncoderLoader
    let layout: MixedLayout

    func switches(_ name: String, group: Int) -> Bool { switches.switches(loader.checkpointName(name), mix: group) }

    func materialize(_ name: String, group: Int, into out: UnsafeMutableBufferPointer<Float>) {
        if !switches.materialize(loader.checkpointName(name), mix: group, into: out) {
            guard let base = switches.base(loader.checkpointName(name)) else {
                preconditionFailure("no tensor '\(name)' in the base")
            }
            _ = out.update(fromContentsOf: base)
        }
    }

    func gatherRows(_ name: String, group: Int, rows: [Int], width: Int, into out: UnsafeMutableBufferPointer<Float>) {
        switches.gatherRows(loader.checkpointName(name), mix: group, rows: rows, width: width, into: out)
    }

    func tiles(_ name: String, group: Int) -> WeightTiles? {
        guard let mix = switches.tensorMix(loader.checkpointName(name), mix: group) else { return nil }
        return WeightTiles(count: mix.count) { mix.write($0, into: $1) }
    }
}
