import Dispatch
import Evaluation
import Foundation
import ServiceLifecycle
import TaskSwitches

/// What a request's texts are embedded with.
public enum Target: Sendable {
    /// The base model, no switch.
    case base
    /// One task's pack at weight 1 (T-Switch with the task known).
    case task(LoadedPack)
    /// Auto-Switch: each text is routed by its base features to one of these packs (or the base).
    case auto([String: LoadedPack])
}

/// Features of one request's texts and the switch each was embedded with.
public struct Embedded: Sendable {
    /// `count × hidden`, row-major, in input order.
    public let features: [Float]
    /// Per text: the task whose pack was applied, or "base".
    public let tasks: [String]
    /// Per text: the pack applied (nil for the base), for its head.
    public let packs: [LoadedPack?]
}

/// The one place inference happens: requests queue here and are answered in batches, one batch at a time.
///
/// The resident base is switched in place (`SwitchableModel`), so two callers with different tasks must never
/// run at once; every forward pass and every switch runs on one serial dispatch queue, outside Swift's
/// cooperative pool (which has one thread per core and would stall HTTP handling during a forward pass).
///
/// A batch takes queued requests oldest first while their tokens fit `maxBatchTokens` (at least one request),
/// after the oldest has waited up to `maxWaitMilliseconds` for company. Inside a batch the texts are grouped by
/// the switch they need: one group for the base (which also yields the routing features of `auto` texts), then
/// one switch and one encoder per pack. Oldest-first means a burst on one task delays the others by at most the
/// batches already queued ahead of them, never indefinitely.
///
/// Admission is bounded by `maxQueuedTexts` texts queued or running: beyond it `submit` throws 429 at once.
///
/// As a `Service`, `run()` works the queue until graceful shutdown, then answers what is still queued and returns.
/// (The HTTP server is shut down first and drains its requests through this queue.)
public actor InferenceQueue: Service {
    public nonisolated let config: ServerConfiguration
    public nonisolated let tokenizer: any TextTokenizer
    public nonisolated let hiddenSize: Int
    public nonisolated let hasRouter: Bool
    public nonisolated let baseName: String
    nonisolated let metrics: ServingMetrics
    private nonisolated let worker: InferenceWorker
    private let compute = DispatchQueue(label: "tswitch.serve.inference", qos: .userInitiated)

    private var packs: [String: LoadedPack] = [:]
    private var generation = 0
    private var pending: [Job] = []
    /// Texts admitted and not yet answered.
    private var admitted = 0
    private var waiter: CheckedContinuation<Void, Never>?
    private var stopping = false
    private var warmedUp = false

    private struct Job {
        let input: InferenceWorker.Input
        let tokens: Int
        let enqueued: ContinuousClock.Instant
        let continuation: CheckedContinuation<Embedded, any Error>
    }

    init(encoder: SwitchedEncoder, router: AutoSwitchRouter?, config: ServerConfiguration, metrics: ServingMetrics, baseName: String) {
        self.config = config
        self.metrics = metrics
        self.baseName = baseName
        tokenizer = encoder.tokenizer
        hiddenSize = encoder.config.hiddenSize
        hasRouter = router != nil
        worker = InferenceWorker(encoder: encoder, router: router, config: config)
    }

    // MARK: Packs

    /// The packs loaded now, by task.
    public func loaded() -> [String: LoadedPack] { packs }

    public func pack(_ task: String) -> LoadedPack? { packs[task] }

    /// Whether the warm-up ran and the queue is not shutting down.
    public func isReady() -> Bool { warmedUp && !stopping }

    /// Decodes, validates and installs a pack; nothing changes unless every check passes.
    ///
    /// Checks: the file (magic, version, checksums, limits), the task name against `task` (when given), the base
    /// fingerprint, the head, and a trial switch on the resident base (shapes, names), restored at once.
    /// Requests already queued keep the pack they were admitted with.
    ///
    /// - Returns: the installed pack and whether it replaced one.
    @discardableResult
    public func install(_ bytes: [UInt8], source: String, task: String? = nil) async throws(ServingError)
        -> (pack: LoadedPack, replaced: Bool)
    {
        let pack: SwitchPack
        do {
            pack = try PackFile.decode(bytes, file: source)
        } catch {
            throw ServingError(.packRefused, status: .badRequest, "Pack refused (\(error.code.rawValue)): \(error.message)")
        }
        return try await install(pack, source: source, task: task)
    }

    /// Validates and installs a decoded pack (everything `install(_:source:task:)` checks after decoding).
    @discardableResult
    public func install(_ pack: SwitchPack, source: String, task: String? = nil) async throws(ServingError)
        -> (pack: LoadedPack, replaced: Bool)
    {
        if let task, pack.task != task {
            throw ServingError(
                .packRefused, status: .badRequest,
                "Pack refused: \(source) is the pack of task '\(pack.task)', not '\(task)'; upload it to /v1/packs/\(pack.task).")
        }
        generation += 1
        let loaded = try LoadedPack(
            pack: pack, source: source, generation: generation, fingerprint: worker.encoder.model.fingerprint,
            hidden: hiddenSize)
        try await onComputeThrowing { () throws(ServingError) in try self.worker.trySwitch(pack, source: source) }
        let replaced = packs[pack.task] != nil
        packs[pack.task] = loaded
        metrics.loadedPacks(packs.count)
        return (loaded, replaced)
    }

    /// Removes a task's pack; requests already queued for it are still answered with it.
    public func remove(_ task: String) -> LoadedPack? {
        let old = packs.removeValue(forKey: task)
        metrics.loadedPacks(packs.count)
        return old
    }

    // MARK: Inference

    /// Queues `texts` and waits for their features.
    ///
    /// - Parameter tokens: the texts' token count after truncation (the batch budget counts it).
    /// - Throws: `ServingError` 429 when the queue is full, 503 when shutting down, 500 when inference failed.
    public func submit(_ texts: [String], tokens: Int, target: Target) async throws -> Embedded {
        guard !stopping else {
            throw ServingError(.unavailable, status: .serviceUnavailable, "The server is shutting down; send the request elsewhere.")
        }
        guard admitted + texts.count <= config.maxQueuedTexts else {
            throw ServingError(
                .queueFull, status: .tooManyRequests,
                "The inference queue is full (\(admitted) of \(config.maxQueuedTexts) texts waiting); retry after the time in Retry-After.",
                retryAfter: 1)
        }
        admitted += texts.count
        return try await withCheckedThrowingContinuation { c in
            pending.append(Job(input: .init(texts: texts, target: target), tokens: tokens, enqueued: .now, continuation: c))
            waiter?.resume()
            waiter = nil
        }
    }

    /// Runs one text through the base and through the first pack (every pack had its trial switch when it was
    /// installed), then marks the queue ready.
    public func warmUp(text: String = "Warm-up: one resident base, every task.") async throws(ServingError) {
        var inputs: [InferenceWorker.Input] = [.init(texts: [text], target: .base)]
        if let p = packs.values.min(by: { $0.task < $1.task }) { inputs.append(.init(texts: [text], target: .task(p))) }
        let batch = inputs
        let (results, _) = await onCompute { self.worker.run(batch) }
        for r in results {
            if case .failure(let e) = r { throw e }
        }
        warmedUp = true
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await self.work()
        } onGracefulShutdown: {
            Task { await self.stop() }
        }
    }

    /// Stops admitting requests; what is queued is still answered.
    public func stop() {
        stopping = true
        waiter?.resume()
        waiter = nil
    }

    private func work() async {
        while true {
            if pending.isEmpty {
                if stopping { return }
                await withCheckedContinuation { waiter = $0 }
                continue
            }
            let queuedTokens = pending.reduce(0) { $0 + $1.tokens }
            if queuedTokens < config.maxBatchTokens, !stopping, config.maxWaitMilliseconds > 0 {
                let deadline = pending[0].enqueued + .milliseconds(config.maxWaitMilliseconds)
                if deadline > .now { try? await Task.sleep(until: deadline, clock: .continuous) }
            }
            var take = 0
            var used = 0
            while take < pending.count, take == 0 || used + pending[take].tokens <= config.maxBatchTokens {
                used += pending[take].tokens
                take += 1
            }
            let jobs = Array(pending.prefix(take))
            pending.removeFirst(take)
            let start = ContinuousClock.now
            for j in jobs { metrics.queueWait(start - j.enqueued) }
            let inputs = jobs.map(\.input)
            let (results, groups) = await onCompute { self.worker.run(inputs) }
            metrics.batch(texts: inputs.reduce(0) { $0 + $1.texts.count }, groups: groups, duration: .now - start)
            for (job, result) in zip(jobs, results) {
                admitted -= job.input.texts.count
                job.continuation.resume(with: result.mapError { $0 as any Error })
            }
        }
    }

    private func onCompute<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { c in compute.async { c.resume(returning: body()) } }
    }

    private func onComputeThrowing<T: Sendable>(_ body: @escaping @Sendable () throws(ServingError) -> T)
        async throws(ServingError) -> T
    {
        let r: Result<T, ServingError> = await onCompute { Result { () throws(ServingError) in try body() } }
        return try r.get()
    }

    /// Installs the initial packs (before serving; the same checks as an upload, and one pack per task).
    func installInitial(_ initial: [(pack: SwitchPack, source: String)]) async throws(ServingError) {
        for (pack, source) in initial {
            let (p, replaced) = try await install(pack, source: source)
            if replaced {
                throw ServingError(
                    .packRefused, status: .badRequest, "\(source): a second pack for task '\(p.task)' in the packs folder; keep one.")
            }
        }
    }
}

/// The encoder and router, used only on the inference queue's serial dispatch queue (hence `@unchecked Sendable`:
/// `baseEncoder` is only touched there).
final class InferenceWorker: @unchecked Sendable {
    struct Input: Sendable {
        let texts: [String]
        let target: Target
    }

    let encoder: SwitchedEncoder
    let router: AutoSwitchRouter?
    let config: ServerConfiguration
    /// The base's encoder, built once (the base weights never change between switches).
    private var baseEncoder: SentenceEncoder?

    init(encoder: SwitchedEncoder, router: AutoSwitchRouter?, config: ServerConfiguration) {
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
            throw ServingError(.packRefused, status: .badRequest, "Pack refused (\(error.code.rawValue)): \(error.message)")
        }
    }

    /// Features of every input: one result per input, and the number of switch groups (for metrics).
    func run(_ inputs: [Input]) -> (results: [Result<Embedded, ServingError>], groups: Int) {
        let h = encoder.config.hiddenSize
        var features = inputs.map { [Float](repeating: 0, count: $0.texts.count * h) }
        var tasks = inputs.map { [String](repeating: "base", count: $0.texts.count) }
        var applied = inputs.map { [LoadedPack?](repeating: nil, count: $0.texts.count) }
        var failed = [ServingError?](repeating: nil, count: inputs.count)
        var groupCount = 0
        defer { encoder.model.reset() }

        func embed(_ members: [(Int, Int)], with enc: SentenceEncoder) {
            let texts = members.map { inputs[$0.0].texts[$0.1] }
            let out = enc.embed(texts, maxLength: config.maxLength, batchSize: config.forwardBatch)
            for (row, (j, i)) in members.enumerated() {
                features[j].replaceSubrange((i * h)..<((i + 1) * h), with: out[(row * h)..<((row + 1) * h)])
            }
        }
        func internalError(_ m: String) -> ServingError { ServingError(.internalError, status: .internalServerError, m) }

        // The base group: base requests, and auto requests (their base features route them).
        let baseMembers = inputs.indices.flatMap { j -> [(Int, Int)] in
            switch inputs[j].target {
            case .base, .auto: inputs[j].texts.indices.map { (j, $0) }
            case .task: []
            }
        }
        if !baseMembers.isEmpty {
            groupCount += 1
            do {
                if baseEncoder == nil {
                    encoder.model.reset()
                    baseEncoder = try encoder.currentEncoder()
                }
                if let baseEncoder { embed(baseMembers, with: baseEncoder) }
            } catch {
                for (j, _) in baseMembers { failed[j] = internalError("The base encoder could not be built: \(error.message)") }
            }
        }

        // Groups by pack generation, in order of first use.
        var groups: [Int: (pack: LoadedPack, members: [(Int, Int)])] = [:]
        var order: [Int] = []
        func add(_ pack: LoadedPack, _ member: (Int, Int)) {
            if groups[pack.generation] == nil {
                order.append(pack.generation)
                groups[pack.generation] = (pack, [])
            }
            groups[pack.generation]?.members.append(member)
        }
        for j in inputs.indices where failed[j] == nil {
            switch inputs[j].target {
            case .base: break
            case .task(let p): for i in inputs[j].texts.indices { add(p, (j, i)) }
            case .auto(let candidates):
                guard let router else {
                    failed[j] = internalError("Auto-Switch was asked for, but the server has no router.")
                    continue
                }
                let n = inputs[j].texts.count
                do {
                    let shares = try router.shares(
                        QuerySet(features: features[j], count: n, dimension: h, labels: nil, tasks: []))
                    for i in 0..<n {
                        // The largest share among the tasks loaded when the request was admitted; none: the base.
                        var best: (share: Double, task: String)?
                        for (k, t) in router.query.tasks.enumerated() where candidates[t] != nil && shares[i][k] > 0 {
                            if best == nil || shares[i][k] > best!.share { best = (shares[i][k], t) }
                        }
                        if let best, let p = candidates[best.task] { add(p, (j, i)) }
                    }
                } catch {
                    failed[j] = internalError("Routing failed: \(error.message)")
                }
            }
        }
        for g in order {
            guard let (pack, members) = groups[g] else { continue }
            groupCount += 1
            do {
                try encoder.model.activate([(pack.pack, 1)])
                let enc = try encoder.currentEncoder()
                embed(members, with: enc)
                for (j, i) in members {
                    tasks[j][i] = pack.task
                    applied[j][i] = pack
                }
            } catch {
                for (j, _) in members {
                    failed[j] = internalError("Switching to '\(pack.task)' failed: \(error)")
                }
            }
        }
        let results = inputs.indices.map { j -> Result<Embedded, ServingError> in
            if let e = failed[j] { return .failure(e) }
            return .success(Embedded(features: features[j], tasks: tasks[j], packs: applied[j]))
        }
        return (results, groupCount)
    }
}
