import Evaluation
import Foundation
import TaskSwitches

/// The encoder and router, used only on the inference queue's serial dispatch queue (hence `@unchecked Sendable`:
/// the trial switch of `trySwitch` changes the resident weights and must never overlap a batch).
final class InferenceWorker: @unchecked Sendable {
    struct Input: Sendable {
        let texts: [String]
        let target: Target
    }

    let encoder: SwitchedEncoder
    let router: (any TaskRouter)?
    let config: ServerConfiguration

    init(encoder: SwitchedEncoder, router: (any TaskRouter)?, config: ServerConfiguration) {
        self.encoder = encoder
        self.router = router
        self.config = config
    }

    /// A switch to `pack` and back, proving it applies to this base.
    func trySwitch(_ pack: SwitchPack, source: String) throws(ServingError) {
        defer { encoder.model.reset() }
        do {
            try encoder.model.activate([(pack, 1)])
        } catch {
            throw ServingError(
                .packRefused, status: .badRequest, "Pack refused (\(error.code.rawValue)): \(error.message)")
        }
    }

    /// Features of every input of one batch: one result per input, and the number of distinct switches the batch's
    /// mixed forward ran (for metrics).
    ///
    /// Two passes at most: the base features of the `auto` texts alone (the router reads them; a text routed to no
    /// task keeps them as its answer), then one mixed forward (`SwitchedEncoder.embed(_:packs:mixes:)`) for every
    /// other text of the batch, each on its own pack or the base, whatever the tasks. Packs are the `LoadedPack`
    /// values the requests were admitted with, told apart by generation, so a pack replaced or removed meanwhile
    /// still answers the requests that named it.
    func run(_ inputs: [Input]) -> (results: [Result<Embedded, ServingError>], groups: Int) {
        let h = encoder.config.hiddenSize
        var features = inputs.map { [Float](repeating: 0, count: $0.texts.count * h) }
        var tasks = inputs.map { [String](repeating: "base", count: $0.texts.count) }
        var applied = inputs.map { [LoadedPack?](repeating: nil, count: $0.texts.count) }
        var failed = [ServingError?](repeating: nil, count: inputs.count)
        func internalError(_ m: String) -> ServingError {
            ServingError(.internalError, status: .internalServerError, m)
        }

        // Every text that goes through the mixed forward, with its pack (nil: the base).
        var members: [(input: Int, text: Int, pack: LoadedPack?)] = []
        var autoMembers: [(input: Int, text: Int)] = []
        for (j, input) in inputs.enumerated() {
            switch input.target {
            case .base: members += input.texts.indices.map { (j, $0, nil) }
            case .task(let p): members += input.texts.indices.map { (j, $0, p) }
            case .auto: autoMembers += input.texts.indices.map { (j, $0) }
            }
        }
        if !autoMembers.isEmpty {
            do {
                members += try route(autoMembers, inputs: inputs, into: &features)
            } catch {
                for (j, _) in autoMembers { failed[j] = error }
            }
        }

        // One mixed forward: a one-hot mix per text over the batch's distinct packs (all zero: the base).
        var slot: [Int: Int] = [:]
        var packs: [LoadedPack] = []
        for m in members {
            if let p = m.pack, slot[p.generation] == nil {
                slot[p.generation] = packs.count
                packs.append(p)
            }
        }
        let mixes = members.map { m -> [Double] in
            var w = [Double](repeating: 0, count: packs.count)
            if let p = m.pack, let s = slot[p.generation] { w[s] = 1 }
            return w
        }
        let groups = Set(members.map { $0.pack?.generation ?? -1 }).count
        if !members.isEmpty {
            do {
                let out = try encoder.embed(
                    members.map { inputs[$0.input].texts[$0.text] }, packs: packs.map(\.pack), mixes: mixes,
                    maxLength: config.maxLength, batchSize: config.forwardBatch)
                for (row, m) in members.enumerated() {
                    features[m.input].replaceSubrange(
                        (m.text * h)..<((m.text + 1) * h), with: out[(row * h)..<((row + 1) * h)])
                    if let p = m.pack {
                        tasks[m.input][m.text] = p.task
                        applied[m.input][m.text] = p
                    }
                }
            } catch {
                let names = packs.map(\.task).joined(separator: ", ")
                for m in members {
                    failed[m.input] = internalError(
                        "The mixed forward over \(names.isEmpty ? "the base" : names) failed: \(error)")
                }
            }
        }
        let results = inputs.indices.map { j -> Result<Embedded, ServingError> in
            if let e = failed[j] { return .failure(e) }
            return .success(Embedded(features: features[j], tasks: tasks[j], packs: applied[j]))
        }
        return (results, groups)
    }

    /// Auto-Switch for `members`: their base features (written to `features`, the answer of a text routed to no
    /// task), routed per text to the largest weight among the packs loaded when its request was admitted.
    ///
    /// - Returns: the texts routed to a pack, for the mixed forward.
    private func route(
        _ members: [(input: Int, text: Int)], inputs: [Input], into features: inout [[Float]]
    ) throws(ServingError) -> [(input: Int, text: Int, pack: LoadedPack?)] {
        guard let router else {
            throw ServingError(
                .internalError, status: .internalServerError, "Auto-Switch was asked for, but the server has no router."
            )
        }
        let h = encoder.config.hiddenSize
        let base: [Float]
        let weights: [[Double]]
        do {
            // One base pass on the kept encoder (`withEncoder` would build one): the embeddings, and the router's
            // features (the embeddings at unit length, or the router's layers pooled in the same pass).
            let texts = members.map { inputs[$0.input].texts[$0.text] }
            let (embedding, routed) = try encoder.baseFeatures(
                texts, for: router, maxLength: config.maxLength, batchSize: config.forwardBatch)
            base = embedding
            weights = try router.weights(
                QuerySet(
                    features: routed, count: members.count, dimension: router.featureDimension, labels: nil, tasks: []),
                texts: router.usesTexts ? texts : nil, mode: .perExample, batchSize: 1)
        } catch {
            throw ServingError(.internalError, status: .internalServerError, "Routing failed: \(error)")
        }
        let routedTasks = router.routedTasks
        var out: [(input: Int, text: Int, pack: LoadedPack?)] = []
        for (row, m) in members.enumerated() {
            guard case .auto(let candidates) = inputs[m.input].target else { continue }
            // The largest weight among the loaded tasks; none (out of distribution, or not loaded): the base.
            var best: (weight: Double, pack: LoadedPack)?
            for (k, t) in routedTasks.enumerated() where weights[row][k] > 0 {
                if let p = candidates[t], best.map({ weights[row][k] > $0.weight }) ?? true {
                    best = (weights[row][k], p)
                }
            }
            if let best {
                out.append((m.input, m.text, best.pack))
            } else {
                features[m.input].replaceSubrange(
                    (m.text * h)..<((m.text + 1) * h), with: base[(row * h)..<((row + 1) * h)])
            }
        }
        return out
    }
}
