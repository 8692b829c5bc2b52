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
/// after the oldest has waited up to `maxWaitMilliseconds` for company. A batch is one mixed forward whatever its
/// tasks (`InferenceWorker.run`; only `auto` texts get a base pass first, for routing), so a request never waits
/// for another task's switch, and oldest-first means a burst on one task delays the others by at most the
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

    init(
        encoder: SwitchedEncoder, router: (any TaskRouter)?, config: ServerConfiguration, metrics: ServingMetrics,
        baseName: String
    ) {
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
            throw ServingError(
                .packRefused, status: .badRequest, "Pack refused (\(error.code.rawValue)): \(error.message)")
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
                "Pack refused: \(source) is the pack of task '\(pack.task)', not '\(task)'; upload it to /v1/packs/\(pack.task)."
            )
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
            throw ServingError(
                .unavailable, status: .serviceUnavailable, "The server is shutting down; send the request elsewhere.")
        }
        guard admitted + texts.count <= config.maxQueuedTexts else {
            throw ServingError(
                .queueFull, status: .tooManyRequests,
                "The inference queue is full (\(admitted) of \(config.maxQueuedTexts) texts waiting); retry after the time in Retry-After.",
                retryAfter: 1)
        }
        admitted += texts.count
        metrics.queuedTexts(admitted)
        return try await withCheckedThrowingContinuation { c in
            pending.append(
                Job(input: .init(texts: texts, target: target), tokens: tokens, enqueued: .now, continuation: c))
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
                metrics.queuedTexts(admitted)
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
                    .packRefused, status: .badRequest,
                    "\(source): a second pack for task '\(p.task)' in the packs folder; keep one.")
            }
        }
    }
}
