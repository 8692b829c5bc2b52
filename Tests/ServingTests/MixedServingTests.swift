import CheckpointIO
import Evaluation
import Foundation
import Hummingbird
import HummingbirdTesting
import TaskSwitches
import Testing

@testable import Serving

/// One embeddings request as the tests send it: status, the task of each answer, its rows (base64, exact).
struct Answer: Sendable {
    let status: HTTPResponse.Status
    let tasks: [String]
    let rows: [[Float]]
    let body: String
}

func embeddings(_ client: some TestClientProtocol, model: String, _ texts: [String]) async throws -> Answer {
    let r = try await client.execute(
        uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
        body: try json(["model": model, "input": texts, "encoding_format": "base64"]))
    guard r.status == .ok else { return Answer(status: r.status, tasks: [], rows: [], body: String(buffer: r.body)) }
    let data = try #require(try object(r)["data"] as? [[String: Any]])
    return Answer(
        status: r.status, tasks: data.map { $0["task"] as? String ?? "?" },
        rows: try data.map { try floats(base64: $0["embedding"] as? String ?? "") }, body: "")
}

/// A text embedded alone with its pack ("base": none), the reference every served row is held to.
func alone(_ text: String, task: String) throws -> [Float] {
    let packs = task == "base" ? [] : [try ServeFixture.pack(task)]
    return try ServeFixture.encoder.embed([text], packs: packs, maxLength: 128, batchSize: 64)
}

func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

/// A histogram's `_count` or `_sum` in the Prometheus text.
func metric(_ text: String, _ name: String) -> Double? {
    text.split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
        Double($0.split(separator: " ").last ?? "")
    }
}

/// Set once the pack churn is over, so the clients keep sending until then.
actor Flag {
    private(set) var isSet = false
    func set() { isSet = true }
}

extension ServingTests {
    @Test(
        "Requests of several tasks and the base form one batch and one mixed forward; each text equals it embedded alone with its pack"
    )
    func mixedTaskBatch() async throws {
        // A long wait: the three requests, sent at once, are taken as one batch.
        let server = try await ServeFixture.server { $0.maxWaitMilliseconds = 1500 }
        let verbs = try ServeFixture.texts("wn-verb", 3)
        let langs = try ServeFixture.texts("lang-id", 3)
        let nouns = try ServeFixture.texts("wn-noun", 2)
        let (answers, metrics) = try await server.application().test(.router) { client in
            async let a = embeddings(client, model: "wn-verb", verbs)
            async let b = embeddings(client, model: "lang-id", langs)
            async let c = embeddings(client, model: "base", nouns)
            let all = try await [a, b, c]
            return (all, String(buffer: try await client.execute(uri: "/metrics", method: .get).body))
        }
        #expect(metric(metrics, "tswitch_batch_texts_count") == 1, "one batch expected:\n\(metrics)")
        #expect(metric(metrics, "tswitch_batch_groups_sum") == 3)
        for (answer, (task, texts)) in zip(answers, [("wn-verb", verbs), ("lang-id", langs), ("base", nouns)]) {
            #expect(answer.status == .ok, "\(answer.body)")
            #expect(answer.tasks == Array(repeating: task, count: texts.count))
            for (row, text) in zip(answer.rows, texts) {
                #expect(maxDifference(row, try alone(text, task: task)) <= 1e-5, "\(task): \(text)")
            }
        }
        // The switches really differ: a task's row is not the base's.
        #expect(maxDifference(answers[0].rows[0], try alone(verbs[0], task: "base")) > 1e-3)
    }

    @Test(
        "With the .tsr router, auto routes each text as LDARouter.route does on unit-length base features; unloaded or out-of-distribution tasks get the base"
    )
    func ldaRouterAuto() async throws {
        let server = try await ServeFixture.server(router: ServeFixture.ldaRouterPath)
        let texts =
            try ServeFixture.texts("wn-verb", 3) + ServeFixture.texts("lang-id", 3) + ServeFixture.texts("wn-noun", 2)
            + ["zzzz"]  // out of distribution for the shipped router (`tswitch route` says so)
        let answer = try await server.application().test(.router) { client in
            try await embeddings(client, model: "auto", texts)
        }
        #expect(answer.status == .ok, "\(answer.body)")
        // The reference: the router file read and applied by hand to the base features of the same request.
        let lda = try RouterFile.read(ServeFixture.ldaRouterPath)
        let h = ServeFixture.encoder.config.hiddenSize
        var base = try ServeFixture.encoder.embed(texts, packs: [], maxLength: 128, batchSize: 64)
        MeanPooling.normalizeRows(&base, width: h)
        let routes = try lda.route(QuerySet(features: base, count: texts.count, dimension: h, labels: nil, tasks: []))
        let expected = routes.map { r in
            r.map { lda.tasks[$0] }.flatMap { ServeFixture.tasks.contains($0) ? $0 : nil } ?? "base"
        }
        #expect(routes.last.map { $0 == nil } == true, "'zzzz' should be out of distribution")
        #expect(answer.tasks == expected)
        #expect(expected.contains("wn-verb") && expected.contains("lang-id") && expected.contains("base"))
        for (i, text) in texts.enumerated() where i < answer.rows.count {
            #expect(
                maxDifference(answer.rows[i], try alone(text, task: expected[i])) <= 1e-5, "\(expected[i]): \(text)")
        }
    }

    @Test("A router file fitted on another base is refused at start, naming the file")
    func ldaRouterOtherBase() async throws {
        let lda = try RouterFile.read(ServeFixture.ldaRouterPath)
        let fp = try #require(lda.baseFingerprint)
        let other = LDARouter(
            tasks: lda.tasks, dimension: lda.dimension, centre: lda.centre, weights: lda.weights, bias: lda.bias,
            choleskyFactor: lda.choleskyFactor, shrinkage: lda.shrinkage, oodThreshold: lda.oodThreshold,
            baseFingerprint: BaseFingerprint(value: fp.value ^ 1))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("serve-other-base-\(UUID()).tsr").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try RouterFile.write(other, to: path)
        let error = await #expect(throws: SwitchError.self) { _ = try await ServeFixture.server(router: path) }
        #expect(error?.code == .wrongBase)
        #expect(error?.message.contains(path) == true)
    }

    /// An LDA router on base layers 3 and 6 (768 features), fitted here on the layer features of 40 train texts of
    /// four tasks (two of them not loaded by the fixture's server), written to a temporary router file.
    static func layeredRouter() throws -> (router: LDARouter, path: String) {
        let tasks = ["lang-id", "wn-verb", "wn-noun", "code-lang"]
        let parts = try ServeFixture.encoder.withEncoder([]) { e in
            try tasks.map { task -> (task: String, features: QuerySet) in
                let texts = try TextDataset.read(
                    path: ServeFixture.repository.appendingPathComponent("data/tasks/\(task)/train.jsonl").path
                ).prefix(40).map(\.text)
                let f = try e.routerFeatures(Array(texts), layers: [3, 6], maxLength: 128, batchSize: 64)
                return (task, QuerySet(features: f, count: texts.count, dimension: 768, labels: nil, tasks: []))
            }
        }
        let router = try LDARouter.fit(
            QuerySet.combine(parts), shrinkage: 0.01, baseFingerprint: ServeFixture.encoder.model.fingerprint,
            layers: [3, 6])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("serve-layered-\(UUID()).tsr").path
        _ = try RouterFile.write(router, to: path)
        return (router, path)
    }

    @Test(
        "A router on base layers is served: auto routes each text as LDARouter.route does on the library's layer features of the same text, and answers with that pack's embedding"
    )
    func layeredRouterAuto() async throws {
        let (lda, path) = try Self.layeredRouter()
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try RouterFile.read(path).layers == [3, 6])
        let server = try await ServeFixture.server(router: path)
        let texts =
            try ServeFixture.texts("wn-verb", 3) + ServeFixture.texts("lang-id", 3) + ServeFixture.texts("wn-noun", 2)
            + ServeFixture.texts("code-lang", 1) + ["zzzz"]
        let answer = try await server.application().test(.router) { client in
            try await embeddings(client, model: "auto", texts)
        }
        #expect(answer.status == .ok, "\(answer.body)")
        // The reference: the library's router features (what `tswitch route --build --layers` fits on and
        // `tswitch eval --auto-switch` routes on), from an encoder of its own, routed by the file's router.
        let features = try ServeFixture.encoder.withEncoder([]) {
            try $0.routerFeatures(texts, layers: [3, 6], maxLength: 128, batchSize: 64)
        }
        let routes = try lda.route(
            QuerySet(features: features, count: texts.count, dimension: 768, labels: nil, tasks: []))
        let expected = routes.map { r in
            r.map { lda.tasks[$0] }.flatMap { ServeFixture.tasks.contains($0) ? $0 : nil } ?? "base"
        }
        #expect(answer.tasks == expected)
        #expect(expected.contains("wn-verb") && expected.contains("lang-id") && expected.contains("base"))
        for (i, text) in texts.enumerated() where i < answer.rows.count {
            #expect(
                maxDifference(answer.rows[i], try alone(text, task: expected[i])) <= 1e-5, "\(expected[i]): \(text)")
        }
        // The server's one base pass: the same router features bit for bit, and the base embeddings beside them.
        let (embedding, routing) = try ServeFixture.encoder.baseFeatures(
            texts, for: lda, maxLength: 128, batchSize: 64)
        #expect(routing == features)
        #expect(
            maxDifference(embedding, try ServeFixture.encoder.embed(texts, packs: [], maxLength: 128, batchSize: 64))
                <= 1e-6)
    }

    @Test("A router reading a layer past the base's last is refused at start, naming the file and the layer")
    func layeredRouterPastTheLastLayer() async throws {
        let lda = try RouterFile.read(ServeFixture.ldaRouterPath)
        let layered = LDARouter(
            tasks: lda.tasks, dimension: lda.dimension, centre: lda.centre, weights: lda.weights, bias: lda.bias,
            choleskyFactor: lda.choleskyFactor, shrinkage: lda.shrinkage, oodThreshold: lda.oodThreshold,
            baseFingerprint: lda.baseFingerprint, layers: [7])
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("serve-layered-\(UUID()).tsr").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try RouterFile.write(layered, to: path)
        let error = await #expect(throws: ServingError.self) { _ = try await ServeFixture.server(router: path) }
        #expect(error?.message.contains(path) == true && error?.message.contains("layer 7") == true)
    }

    @Test(
        "Packs uploaded, replaced and deleted while clients of several tasks send requests: no request fails, every answer matches its task"
    )
    func packChurnUnderLoad() async throws {
        let server = try await ServeFixture.server { $0.maxWaitMilliseconds = 2 }
        let nounBytes = [UInt8](
            try Data(contentsOf: ServeFixture.repository.appendingPathComponent("packs/wn-noun.tsw")))
        let langBytes = [UInt8](
            try Data(contentsOf: ServeFixture.repository.appendingPathComponent("packs/lang-id.tsw")))
        let work =
            try ServeFixture.texts("wn-verb", 3).map { ("wn-verb", $0) }
            + ServeFixture.texts("lang-id", 3).map { ("lang-id", $0) }
            + ServeFixture.texts("wn-noun", 2).map { ("base", $0) }
        let nounText = try ServeFixture.texts("wn-noun", 1)[0]
        var references: [String: [Float]] = [:]
        for (task, text) in work { references[task + "\t" + text] = try alone(text, task: task) }
        let nounReference = try alone(nounText, task: "wn-noun")
        let refs = references
        let done = Flag()

        let (failures, sent) = try await server.application().test(.router) { client in
            try await withThrowingTaskGroup(of: ([String], Int).self) { group in
                for c in 0..<4 {
                    group.addTask {
                        var failures: [String] = []
                        var n = 0
                        while await !done.isSet || n < 4 {
                            let (task, text) = work[(c * 5 + n) % work.count]
                            let a = try await embeddings(client, model: task, [text])
                            if a.status != .ok {
                                failures.append("\(task) → \(a.status): \(a.body)")
                            } else if a.tasks != [task]
                                || maxDifference(a.rows[0], refs[task + "\t" + text] ?? []) > 1e-5
                            {
                                failures.append(
                                    "\(task): answered as \(a.tasks), off by \(maxDifference(a.rows[0], refs[task + "\t" + text] ?? []))"
                                )
                            }
                            n += 1
                        }
                        return (failures, n)
                    }
                }
                group.addTask {
                    defer { Task { await done.set() } }
                    var failures: [String] = []
                    let admin: HTTPFields = [.authorization: "Bearer secret"]
                    for cycle in 0..<2 {
                        let put = try await client.execute(
                            uri: "/v1/packs/wn-noun", method: .put, headers: admin, body: ByteBuffer(bytes: nounBytes))
                        if put.status != .created {
                            failures.append("PUT wn-noun (\(cycle)) → \(put.status): \(String(buffer: put.body))")
                        }
                        let a = try await embeddings(client, model: "wn-noun", [nounText])
                        if a.status != .ok || a.tasks != ["wn-noun"]
                            || maxDifference(a.rows.first ?? [], nounReference) > 1e-5
                        {
                            failures.append("wn-noun after PUT (\(cycle)): \(a.status) \(a.tasks) \(a.body)")
                        }
                        // Replacing a pack requests are using: those in flight finish on the one they started with.
                        let replace = try await client.execute(
                            uri: "/v1/packs/lang-id", method: .put, headers: admin, body: ByteBuffer(bytes: langBytes))
                        if replace.status != .ok {
                            failures.append(
                                "PUT lang-id (\(cycle)) → \(replace.status): \(String(buffer: replace.body))")
                        }
                        let del = try await client.execute(uri: "/v1/packs/wn-noun", method: .delete, headers: admin)
                        if del.status != .ok {
                            failures.append("DELETE wn-noun (\(cycle)) → \(del.status): \(String(buffer: del.body))")
                        }
                    }
                    await done.set()
                    return (failures, 0)
                }
                var all: [String] = []
                var sent = 0
                for try await (f, n) in group {
                    all += f
                    sent += n
                }
                return (all, sent)
            }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
        #expect(sent >= 16)
    }
}
