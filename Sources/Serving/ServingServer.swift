import CheckpointIO
import Evaluation
import Foundation
import Hummingbird
import Logging
import TaskSwitches

/// `tswitch serve`: one resident base answering every task over HTTP.
///
/// Endpoints: `POST /v1/embeddings` (OpenAI's shape, plus `data[i].task`), `POST /v1/classify`, `GET /v1/models`,
/// `GET /health`, `GET /ready`, `GET /metrics`, and with the admin token `PUT`/`DELETE /v1/packs/{task}`. Every
/// error is OpenAI's `{"error": {"message", "type", "code"}}`; the server keeps serving after any of them.
public struct ServingServer: Sendable {
    public let queue: InferenceQueue
    public let config: ServerConfiguration
    public let metrics: ServingMetrics

    /// Loads the base, every `*.tsw` in `packsDirectory` (each decoded with its checksums, its base fingerprint
    /// checked, a trial switch done) and, when given, the router; then runs the warm-up batch.
    ///
    /// - Parameter routerPath: an LDA router file (`.tsr`) or a labelled k-NN query set; nil: `auto` is refused.
    public static func load(
        base: String, packsDirectory: String, routerPath: String?, config: ServerConfiguration
    ) async throws -> ServingServer {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: packsDirectory, isDirectory: &isDir), isDir.boolValue else {
            throw ServingError(.invalidInput, status: .badRequest, "\(packsDirectory): not a folder of packs (*.tsw).")
        }
        let files = try fm.contentsOfDirectory(atPath: packsDirectory).filter { $0.hasSuffix(".tsw") }.sorted()
            .map { URL(fileURLWithPath: packsDirectory).appendingPathComponent($0).path }
        let encoder = try SwitchedEncoder(basePath: base)
        let packs = try files.map { (pack: try PackFile.read($0), source: $0) }
        return try await make(
            encoder: encoder, baseName: URL(fileURLWithPath: base).lastPathComponent, packs: packs,
            routerPath: routerPath, config: config)
    }

    /// A server over an encoder already loaded (tests share one base between servers; only one server may use
    /// an encoder at a time, as switching is in place).
    public static func make(
        encoder: SwitchedEncoder, baseName: String, packs: [(pack: SwitchPack, source: String)], routerPath: String?,
        config: ServerConfiguration
    ) async throws -> ServingServer {
        try config.validate(maxPositions: encoder.config.maxPositions)
        let router = try routerPath.map { path throws -> any TaskRouter in
            try loadRouter(path, encoder: encoder, config: config)
        }
        let metrics = ServingMetrics()
        let queue = InferenceQueue(
            encoder: encoder, router: router, config: config, metrics: metrics, baseName: baseName)
        try await queue.installInitial(packs)
        try await queue.warmUp()
        return ServingServer(queue: queue, config: config, metrics: metrics)
    }

    /// A router file (`.tsr`, the LDA router of `tswitch route --build`; its base fingerprint checked) or a labelled
    /// k-NN query set (`.safetensors`), told apart by the file's magic as `tswitch eval` and `route` tell them.
    static func loadRouter(_ path: String, encoder: SwitchedEncoder, config: ServerConfiguration) throws
        -> any TaskRouter
    {
        let hidden = encoder.config.hiddenSize
        let router: any TaskRouter
        if RouterFile.isRouterFile(path) {
            let lda = try RouterFile.read(path)
            try lda.check(base: encoder.model.fingerprint, file: path)
            // A router on layer features (`route --build --layers`) reads them from the same base pass that
            // routes (`SwitchedEncoder.baseFeatures`); its layers must exist in this base.
            let layerCount = encoder.config.layerCount
            if let bad = lda.layers.first(where: { !(0...layerCount).contains($0) }) {
                throw ServingError(
                    .invalidInput, status: .badRequest,
                    "\(path): the router reads base layer \(bad); the base has layers 0 (embeddings) to \(layerCount)."
                )
            }
            router = lda
        } else {
            let query = try QuerySet(path: path, requireLabels: true)
            guard query.dimension == hidden else {
                throw ServingError(
                    .invalidInput, status: .badRequest,
                    "\(path): the query set has \(query.dimension)-dimensional features; the base's hidden size is \(hidden)."
                )
            }
            router = try AutoSwitchRouter(query: query, k: min(config.routeK, query.count), distance: .cosine)
        }
        let width = max(1, router.featureLayers.count) * hidden
        guard router.featureDimension == width else {
            throw ServingError(
                .invalidInput, status: .badRequest,
                "\(path): the router takes \(router.featureDimension)-dimensional features; the base's are \(width) (hidden size \(hidden) × \(max(1, router.featureLayers.count)) layers)."
            )
        }
        return router
    }

    /// The routes, behind one middleware that turns every error into OpenAI's JSON error and counts requests.
    public func router() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: ErrorAndMetricsMiddleware(metrics: metrics))
        let server = self
        router.get("/health") { _, _ in jsonResponse(["status": "ok"]) }
        router.get("/ready") { _, _ in
            guard await server.queue.isReady() else {
                throw ServingError(
                    .unavailable, status: .serviceUnavailable, "The server is warming up or shutting down.")
            }
            return jsonResponse(["status": "ready"])
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: server.metrics.render())))
        }
        router.get("/v1/models") { _, _ in try await server.models() }
        router.post("/v1/embeddings") { request, _ in try await server.embeddings(request) }
        router.post("/v1/classify") { request, _ in try await server.classify(request) }
        router.put("/v1/packs/:task") { request, context in
            try await server.putPack(request, task: context.parameters.get("task") ?? "")
        }
        router.delete("/v1/packs/:task") { request, context in
            try await server.deletePack(request, task: context.parameters.get("task") ?? "")
        }
        return router
    }

    /// The HTTP application, with the inference queue as a service (shut down after the HTTP server, so requests
    /// in flight are answered first).
    ///
    /// - Parameter runsQueue: false when the caller runs `queue.run()` itself (tests sharing one queue between
    ///   applications).
    public func application(
        host: String = "127.0.0.1", port: Int = 8080, logger: Logger? = nil, runsQueue: Bool = true,
        onServerRunning: @escaping @Sendable (Int?) async -> Void = { _ in }
    ) -> Application<RouterResponder<BasicRequestContext>> {
        var app = Application(
            router: router(), configuration: .init(address: .hostname(host, port: port), serverName: "tswitch"),
            onServerRunning: { channel in await onServerRunning(channel.localAddress?.port) },
            logger: logger)
        if runsQueue { app.addServices(queue) }
        return app
    }

    // MARK: Handlers

    private func embeddings(_ request: Request) async throws -> Response {
        let req = try await decode(EmbeddingsRequest.self, from: request)
        let format = req.encodingFormat ?? "float"
        guard format == "float" || format == "base64" else {
            throw ServingError.badRequest("Field 'encoding_format' must be \"float\" or \"base64\"; got \"\(format)\".")
        }
        if let d = req.dimensions, d != queue.hiddenSize {
            throw ServingError.badRequest(
                "Field 'dimensions': this model's embeddings have \(queue.hiddenSize) dimensions; got \(d).")
        }
        let target = try await resolve(req.model, field: "model", needHead: false)
        let prepared = try prepare(req.input.texts)
        let out = try await queue.submit(req.input.texts, tokens: prepared.tokens, target: target)
        count(out.tasks)
        let h = queue.hiddenSize
        let data = out.tasks.indices.map { i in
            let row = out.features[(i * h)..<((i + 1) * h)]
            let value: EmbeddingValue =
                format == "base64"
                ? .base64(row.withUnsafeBytes { Data($0) }.base64EncodedString())  // x86-64 and arm64: little-endian
                : .floats(row)
            return EmbeddingObject(
                index: i, embedding: value, task: out.tasks[i], truncated: prepared.truncated[i] ? true : nil)
        }
        return try jsonResponse(
            EmbeddingsResponse(
                data: data, model: req.model, usage: Usage(promptTokens: prepared.tokens, totalTokens: prepared.tokens))
        )
    }

    private func classify(_ request: Request) async throws -> Response {
        let req = try await decode(ClassifyRequest.self, from: request)
        let target = try await resolve(req.task, field: "task", needHead: true)
        let prepared = try prepare(req.input.texts)
        let out = try await queue.submit(req.input.texts, tokens: prepared.tokens, target: target)
        count(out.tasks)
        let h = queue.hiddenSize
        let data = out.tasks.indices.map { i -> Classification in
            let truncated = prepared.truncated[i] ? true : nil
            guard let head = out.packs[i]?.head else {
                return Classification(
                    index: i, task: out.tasks[i], label: nil, score: nil, scores: nil, truncated: truncated)
            }
            let p = probabilities(head, Array(out.features[(i * h)..<((i + 1) * h)]))
            let names = (0..<head.classes).map { head.labels?[$0] ?? "\($0)" }
            var best = 0
            for c in 0..<head.classes where p.logits[c] > p.logits[best] { best = c }  // LinearHead.predict's rule
            return Classification(
                index: i, task: out.tasks[i], label: names[best], score: p.probabilities[best],
                scores: req.scores == true
                    ? names.indices.map { ClassScore(label: names[$0], score: p.probabilities[$0]) } : nil,
                truncated: truncated)
        }
        return try jsonResponse(
            ClassifyResponse(
                data: data, model: req.task, usage: Usage(promptTokens: prepared.tokens, totalTokens: prepared.tokens)))
    }

    private func models() async throws -> Response {
        let packs = await queue.loaded().values.sorted { $0.task < $1.task }
        var data = [ModelEntry(id: "base", created: 0, parent: nil, kind: "base", labels: nil, hasHead: false)]
        for p in packs {
            data.append(
                ModelEntry(
                    id: p.task, created: 0, parent: "base", kind: p.pack.kind.rawValue,
                    labels: p.pack.labels.isEmpty ? nil : p.pack.labels, hasHead: p.head != nil))
        }
        return try jsonResponse(ModelList(data: data))
    }

    private func putPack(_ request: Request, task: String) async throws -> Response {
        try authorize(request)
        let body = try await readBody(request, limit: config.maxPackBytes, what: "A pack upload")
        let (pack, replaced) = try await queue.install(body, source: "upload for '\(task)'", task: task)
        return try jsonResponse(
            ModelEntry(
                id: pack.task, created: Int(Date().timeIntervalSince1970), parent: "base",
                kind: pack.pack.kind.rawValue,
                labels: pack.pack.labels.isEmpty ? nil : pack.pack.labels, hasHead: pack.head != nil),
            status: replaced ? .ok : .created)
    }

    private func deletePack(_ request: Request, task: String) async throws -> Response {
        try authorize(request)
        guard await queue.remove(task) != nil else { throw await unknownTask(task, field: "task") }
        return jsonResponse(["id": task, "object": "model", "deleted": true] as [String: any Sendable])
    }

    // MARK: Checks

    private func authorize(_ request: Request) throws(ServingError) {
        guard let token = config.adminToken else {
            throw ServingError(
                .adminDisabled, status: .forbidden,
                "Pack management is off: start the server with --admin-token (or TSWITCH_ADMIN_TOKEN).")
        }
        let given = request.headers[.authorization] ?? ""
        guard constantTimeEqual(Array(given.utf8), Array("Bearer \(token)".utf8)) else {
            throw ServingError(
                .unauthorized, status: .unauthorized,
                "Pack management needs the admin token: send 'Authorization: Bearer <token>'; the token given is missing or wrong."
            )
        }
    }

    /// The switch a request names: "base", "auto" (needs the router), or a loaded task (404 naming the loaded
    /// tasks otherwise; never a silent fallback to the base).
    private func resolve(_ name: String, field: String, needHead: Bool) async throws(ServingError) -> Target {
        switch name {
        case "base":
            if needHead {
                throw ServingError.badRequest(
                    .noHead, "The base has no classification head; name a task (or \"auto\").")
            }
            return .base
        case "auto":
            guard queue.hasRouter else {
                throw ServingError.badRequest(
                    .noRouter,
                    "\"auto\" needs a router, and this server has none (start it with --router, or put router.tsr or queries.safetensors in the packs folder)."
                )
            }
            let all = await queue.loaded()
            return .auto(needHead ? all.filter { $0.value.head != nil } : all)
        default:
            guard let p = await queue.pack(name) else { throw await unknownTask(name, field: field) }
            if needHead, p.head == nil {
                throw ServingError.badRequest(
                    .noHead, "The pack of '\(name)' carries no classification head; /v1/embeddings serves it.")
            }
            return .task(p)
        }
    }

    private func unknownTask(_ name: String, field: String) async -> ServingError {
        let tasks = await queue.loaded().keys.sorted()
        return ServingError(
            .modelNotFound, status: .notFound,
            "No task '\(name)' is loaded (\(field)); loaded: \(tasks.isEmpty ? "none" : tasks.joined(separator: ", ")), plus \"base\"\(queue.hasRouter ? " and \"auto\"" : "")."
        )
    }

    /// Token counts and limits: empty input and too many texts are refused; a text over `maxLength` tokens is
    /// refused, or cut when `truncate` is set.
    private func prepare(_ texts: [String]) throws(ServingError) -> (tokens: Int, truncated: [Bool]) {
        guard !texts.isEmpty else { throw ServingError.badRequest("Field 'input' is empty; send at least one text.") }
        guard texts.count <= config.maxInputs else {
            throw ServingError.badRequest(
                "Field 'input' has \(texts.count) texts; this server takes at most \(config.maxInputs) per request.")
        }
        var total = 0
        var truncated: [Bool] = []
        for (i, t) in texts.enumerated() {
            let n = queue.tokenizer.encode(t, maxLength: Int(Int32.max)).count  // special tokens included
            if n > config.maxLength, !config.truncate {
                throw ServingError.badRequest(
                    .textTooLong,
                    "Text \(i) of 'input' has \(n) tokens, over the limit of \(config.maxLength) ([CLS] and [SEP] included); this server does not truncate (start it with --truncate to cut long texts)."
                )
            }
            truncated.append(n > config.maxLength)
            total += min(n, config.maxLength)
        }
        return (total, truncated)
    }

    private func count(_ tasks: [String]) {
        var n: [String: Int] = [:]
        for t in tasks { n[t, default: 0] += 1 }
        for (t, c) in n {
            metrics.texts(task: t, count: c)
            metrics.taskRequest(task: t)
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, from request: Request) async throws -> T {
        let body = try await readBody(request, limit: config.maxBodyBytes, what: "The body")
        do {
            return try JSONDecoder().decode(T.self, from: Data(body))
        } catch {
            throw ServingError(.invalidJSON, status: .badRequest, describe(error))
        }
    }

    private func readBody(_ request: Request, limit: Int, what: String) async throws(ServingError) -> [UInt8] {
        func tooLarge() -> ServingError {
            ServingError(
                .bodyTooLarge, status: .contentTooLarge, "\(what) is larger than this server's limit of \(limit) bytes."
            )
        }
        if let length = request.headers[.contentLength].flatMap(Int.init), length > limit { throw tooLarge() }
        do {
            let buffer = try await request.body.collect(upTo: limit)
            return Array(buffer.readableBytesView)
        } catch {
            if let e = error as? any HTTPResponseError, e.status == .contentTooLarge { throw tooLarge() }
            throw ServingError(.invalidJSON, status: .badRequest, "\(what) could not be read: \(error).")
        }
    }
}

/// Logits and softmax probabilities of one feature row (logits summed as `LinearHead.predict` sums them).
func probabilities(_ head: LinearHead, _ f: [Float]) -> (logits: [Float], probabilities: [Float]) {
    var logits = [Float](repeating: 0, count: head.classes)
    for c in 0..<head.classes {
        var s = head.bias[c]
        for j in 0..<head.hidden { s += head.weight[c * head.hidden + j] * f[j] }
        logits[c] = s
    }
    let m = logits.max() ?? 0
    let e = logits.map { Float(exp(Double($0 - m))) }
    let z = e.reduce(0, +)
    return (logits, e.map { $0 / z })
}

func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var diff = UInt8(a.count == b.count ? 0 : 1)
    for i in 0..<max(a.count, b.count) { diff |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0) }
    return diff == 0
}

func jsonResponse(_ object: [String: any Sendable], status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
    return Response(
        status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}

func jsonResponse<T: Encodable>(_ value: T, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.withoutEscapingSlashes]
    let data = try encoder.encode(value)
    return Response(
        status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
}
