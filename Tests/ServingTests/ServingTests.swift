import CheckpointIO
import Evaluation
import Foundation
import Hummingbird
import HummingbirdTesting
import TaskSwitches
import TestSupport
import Testing

@testable import Serving

/// The pretrained base, two shipped packs and the shipped router, shared by every test of the suite.
enum ServeFixture {
    static let repository = TestPaths.repository
    static let tasks = ["lang-id", "wn-verb"]
    static var packFiles: [String] { tasks.map { repository.appendingPathComponent("packs/\($0).tsw").path } }
    static var routerPath: String { repository.appendingPathComponent("packs/queries.safetensors").path }
    /// The shipped LDA router file (eight tasks; the fixture loads two of them).
    static var ldaRouterPath: String { repository.appendingPathComponent("packs/router.tsr").path }

    static let modelFolder: String = {
        switch TestPaths.pretrainedModel {
        case .success(let url): return url.path
        case .failure(let missing): fatalError(missing.reason)
        }
    }()

    /// One resident base for all tests (the suite is serialized: switching is in place).
    static let encoder: SwitchedEncoder = {
        do { return try SwitchedEncoder(basePath: modelFolder) } catch { fatalError("\(error)") }
    }()

    /// Decoded once (decoding is the slow part of loading a pack in a debug build).
    static let packs: [String: SwitchPack] = {
        var out: [String: SwitchPack] = [:]
        for t in tasks + ["wn-noun"] {
            do { out[t] = try PackFile.read(repository.appendingPathComponent("packs/\(t).tsw").path) } catch {
                fatalError("\(error)")
            }
        }
        return out
    }()

    static func pack(_ task: String) throws -> SwitchPack { try #require(packs[task]) }

    static func server(router: String? = nil, _ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws
        -> ServingServer
    {
        var config = ServerConfiguration()
        config.adminToken = "secret"
        configure(&config)
        return try await ServingServer.make(
            encoder: encoder, baseName: "all-MiniLM-L6-v2",
            packs: try zip(tasks, packFiles).map { (try pack($0), $1) }, routerPath: router ?? routerPath,
            config: config)
    }

    /// One server with the default limits for the tests that need nothing else; its queue runs for the whole
    /// test process (applications are made with `runsQueue: false`).
    static let shared = Task<ServingServer, any Error> {
        let made = try await ServeFixture.server()
        Task { try await made.queue.run() }
        return made
    }

    static func texts(_ task: String, _ n: Int) throws -> [String] {
        Array(
            try TextDataset.read(path: repository.appendingPathComponent("data/tasks/\(task)/test.jsonl").path).prefix(
                n
            ).map(\.text))
    }
}

func json(_ value: Any) throws -> ByteBuffer {
    ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: value))
}

func object(_ response: TestResponse) throws -> [String: Any] {
    let data = Data(response.body.readableBytesView)
    return try #require(
        try JSONSerialization.jsonObject(with: data) as? [String: Any],
        "not a JSON object: \(String(decoding: data, as: UTF8.self))")
}

/// Checks OpenAI's error shape and returns the error object.
@discardableResult
func expectError(
    _ response: TestResponse, _ status: HTTPResponse.Status, code: String,
    sourceLocation: SourceLocation = #_sourceLocation
)
    throws -> [String: Any]
{
    #expect(response.status == status, "body: \(String(buffer: response.body))", sourceLocation: sourceLocation)
    let error = try #require(try object(response)["error"] as? [String: Any], sourceLocation: sourceLocation)
    #expect(error["code"] as? String == code, sourceLocation: sourceLocation)
    #expect(!((error["message"] as? String) ?? "").isEmpty, sourceLocation: sourceLocation)
    #expect(error["type"] is String, sourceLocation: sourceLocation)
    return error
}

func floats(base64 s: String) throws -> [Float] {
    let data = try #require(Data(base64Encoded: s))
    return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
}

let jsonHeaders: HTTPFields = [.contentType: "application/json"]

@Suite("tswitch serve", .serialized)
struct ServingTests {
    @Test("Embeddings for a task equal SwitchedEncoder with that pack bit for bit, in OpenAI's shape")
    func embeddingsMatchSwitchedEncoder() async throws {
        let server = try await ServeFixture.shared.value
        let texts = try ServeFixture.texts("wn-verb", 5)
        let app = server.application(runsQueue: false)
        let (served, servedFloats, base) = try await app.test(.router) { client in
            let r = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "wn-verb", "input": texts, "encoding_format": "base64"]))
            #expect(r.status == .ok)
            let body = try object(r)
            #expect(body["object"] as? String == "list")
            #expect(body["model"] as? String == "wn-verb")
            let usage = try #require(body["usage"] as? [String: Any])
            let tokens = texts.map { ServeFixture.encoder.tokenizer.encode($0, maxLength: 128).count }.reduce(0, +)
            #expect(usage["prompt_tokens"] as? Int == tokens)
            #expect(usage["total_tokens"] as? Int == tokens)
            let data = try #require(body["data"] as? [[String: Any]])
            #expect(data.count == texts.count)
            var rows: [Float] = []
            for (i, d) in data.enumerated() {
                #expect(d["object"] as? String == "embedding")
                #expect(d["index"] as? Int == i)
                #expect(d["task"] as? String == "wn-verb")
                rows += try floats(base64: try #require(d["embedding"] as? String))
            }
            let f = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "wn-verb", "input": texts]))
            let fd = try #require(try object(f)["data"] as? [[String: Any]])
            let asFloats = fd.flatMap { ($0["embedding"] as? [NSNumber] ?? []).map(\.floatValue) }
            let b = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "base", "input": texts[0]]))
            let bd = try #require(try object(b)["data"] as? [[String: Any]])
            #expect(bd.first?["task"] as? String == "base")
            return (rows, asFloats, (bd.first?["embedding"] as? [NSNumber] ?? []).map(\.floatValue))
        }
        let expected = try ServeFixture.encoder.embed(
            texts, packs: [ServeFixture.pack("wn-verb")], maxLength: 128, batchSize: 64)
        #expect(served == expected)
        #expect(servedFloats == expected)
        let expectedBase = try ServeFixture.encoder.embed([texts[0]], packs: [], maxLength: 128, batchSize: 64)
        #expect(base == expectedBase)
        #expect(base != Array(expected.prefix(expectedBase.count)))
    }

    @Test("Classification answers with the pack's head: the label LinearHead.predict picks, probabilities summing to 1")
    func classifyUsesPackHead() async throws {
        let server = try await ServeFixture.shared.value
        let texts = try ServeFixture.texts("lang-id", 4)
        let pack = try ServeFixture.pack("lang-id")
        let body = try await server.application(runsQueue: false).test(.router) { client in
            let r = try await client.execute(
                uri: "/v1/classify", method: .post, headers: jsonHeaders,
                body: try json(["task": "lang-id", "input": texts, "scores": true]))
            #expect(r.status == .ok)
            return try object(r)
        }
        let features = try ServeFixture.encoder.embed(texts, packs: [pack], maxLength: 128, batchSize: 64)
        let w = try #require(pack.head.first { $0.name == "weight" })
        let b = try #require(pack.head.first { $0.name == "bias" })
        let head = LinearHead(weight: w.values, bias: b.values, classes: w.shape[0], hidden: w.shape[1])
        let predicted = head.predict(features)
        let data = try #require(body["data"] as? [[String: Any]])
        #expect(data.count == texts.count)
        for (i, d) in data.enumerated() {
            #expect(d["task"] as? String == "lang-id")
            #expect(d["label"] as? String == pack.labels[predicted[i]])
            let scores = try #require(d["scores"] as? [[String: Any]])
            #expect(scores.count == head.classes)
            let sum = scores.compactMap { ($0["score"] as? NSNumber)?.doubleValue }.reduce(0, +)
            #expect(abs(sum - 1) < 1e-4)
            let best = scores.max {
                (($0["score"] as? NSNumber)?.doubleValue ?? 0) < (($1["score"] as? NSNumber)?.doubleValue ?? 0)
            }
            #expect(best?["label"] as? String == d["label"] as? String)
        }
    }

    @Test(
        "auto routes each text to a loaded task (or the base), and mixed-task requests are each answered with their own switch"
    )
    func autoAndMixedRequests() async throws {
        let server = try await ServeFixture.shared.value
        let verbs = try ServeFixture.texts("wn-verb", 3)
        let langs = try ServeFixture.texts("lang-id", 3)
        let (routed, mixed) = try await server.application(runsQueue: false).test(.router) { client in
            let r = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "auto", "input": verbs + langs]))
            #expect(r.status == .ok)
            let tasks = try #require(try object(r)["data"] as? [[String: Any]]).compactMap { $0["task"] as? String }
            // Two requests of different tasks at once (one batch with two switch groups, or two batches).
            async let a = client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "wn-verb", "input": verbs, "encoding_format": "base64"]))
            async let b = client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "lang-id", "input": langs, "encoding_format": "base64"]))
            let rows = try await [a, b].map { resp in
                try #require(try object(resp)["data"] as? [[String: Any]]).flatMap {
                    try floats(base64: $0["embedding"] as? String ?? "")
                }
            }
            return (tasks, rows)
        }
        #expect(routed.count == 6)
        #expect(routed.allSatisfy { ["wn-verb", "lang-id", "base"].contains($0) })
        #expect(routed.filter { $0 == "lang-id" }.count >= 2)
        let verbExpected = try ServeFixture.encoder.embed(
            verbs, packs: [ServeFixture.pack("wn-verb")], maxLength: 128, batchSize: 64)
        let langExpected = try ServeFixture.encoder.embed(
            langs, packs: [ServeFixture.pack("lang-id")], maxLength: 128, batchSize: 64)
        // A batch holding both tasks runs tile-fused products (other row blocking and summation order than a
        // one-task batch): equal within the mixed path's stated bound, 1e-5 relative (docs/bench-mixed.md).
        #expect(mixed[0].count == verbExpected.count && mixed[1].count == langExpected.count)
        #expect(PretrainedModel.worstRelativeError(mixed[0], verbExpected, hidden: 384) < 1e-5)
        #expect(PretrainedModel.worstRelativeError(mixed[1], langExpected, hidden: 384) < 1e-5)
    }

    @Test("models, health, ready and metrics answer; metrics count requests, failures, batches, tasks and packs")
    func infoEndpoints() async throws {
        let server = try await ServeFixture.server()
        try await server.application().test(.router) { client in
            let m = try object(try await client.execute(uri: "/v1/models", method: .get))
            let ids = (m["data"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
            #expect(ids == ["base", "lang-id", "wn-verb"])
            let parents = (m["data"] as? [[String: Any]] ?? []).compactMap { $0["parent"] as? String }
            #expect(parents == ["base", "base"])
            #expect(try await client.execute(uri: "/health", method: .get).status == .ok)
            #expect(try await client.execute(uri: "/ready", method: .get).status == .ok)
            _ = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "wn-verb", "input": "run"]))
            _ = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "nope", "input": "run"]))
            let metrics = String(buffer: try await client.execute(uri: "/metrics", method: .get).body)
            for needle in [
                #"tswitch_http_requests_total{endpoint="/v1/embeddings",status="200"} 1"#,
                #"tswitch_http_failures_total{endpoint="/v1/embeddings",status="404"} 1"#,
                #"tswitch_task_requests_total{task="wn-verb"} 1"#,
                "tswitch_loaded_packs 2",
                "tswitch_queued_texts 0",  // the one text was admitted, then answered
                "tswitch_inference_seconds_bucket",
                "tswitch_batch_texts_bucket",
                "tswitch_queue_wait_seconds_bucket",
            ] {
                #expect(metrics.contains(needle), "missing \(needle) in:\n\(metrics)")
            }
        }
    }

    @Test("Bad requests get OpenAI's JSON error with the right status, and the server keeps serving")
    func badRequests() async throws {
        let server = try await ServeFixture.server {
            $0.maxInputs = 3
            $0.maxBodyBytes = 2000
            $0.maxLength = 16
        }
        try await server.application().test(.router) { client in
            func post(_ uri: String, _ body: ByteBuffer) async throws -> TestResponse {
                try await client.execute(uri: uri, method: .post, headers: jsonHeaders, body: body)
            }
            try expectError(
                try await post("/v1/embeddings", ByteBuffer(string: "{\"model\": ")), .badRequest, code: "invalid_json")
            try expectError(
                try await post("/v1/embeddings", ByteBuffer(string: "[1, 2]")), .badRequest, code: "invalid_json")
            let wrongType = try expectError(
                try await post("/v1/embeddings", try json(["model": "wn-verb", "input": 5])), .badRequest,
                code: "invalid_json")
            #expect((wrongType["message"] as? String)?.contains("input") == true)
            try expectError(
                try await post("/v1/embeddings", try json(["input": "x"])), .badRequest, code: "invalid_json")
            try expectError(
                try await post("/v1/embeddings", try json(["model": "wn-verb", "input": [String]()])), .badRequest,
                code: "invalid_input")
            try expectError(
                try await post("/v1/embeddings", try json(["model": "wn-verb", "input": ["a", "b", "c", "d"]])),
                .badRequest,
                code: "invalid_input")
            let long = Array(repeating: "word", count: 40).joined(separator: " ")
            let tooLong = try expectError(
                try await post("/v1/embeddings", try json(["model": "wn-verb", "input": ["ok", long]])), .badRequest,
                code: "text_too_long")
            #expect((tooLong["message"] as? String)?.contains("--truncate") == true)
            try expectError(
                try await post(
                    "/v1/embeddings", try json(["model": "wn-verb", "input": String(repeating: "a ", count: 2000)])),
                .contentTooLarge, code: "body_too_large")
            let unknown = try expectError(
                try await post("/v1/embeddings", try json(["model": "wn-noun", "input": "x"])), .notFound,
                code: "model_not_found")
            #expect((unknown["message"] as? String)?.contains("lang-id, wn-verb") == true)
            try expectError(
                try await post("/v1/classify", try json(["task": "nope", "input": ["x"]])), .notFound,
                code: "model_not_found")
            try expectError(
                try await post("/v1/classify", try json(["task": "base", "input": ["x"]])), .badRequest, code: "no_head"
            )
            try expectError(
                try await post(
                    "/v1/embeddings", try json(["model": "wn-verb", "input": "x", "encoding_format": "hex"])),
                .badRequest,
                code: "invalid_input")
            try expectError(try await client.execute(uri: "/v2/nothing", method: .get), .notFound, code: "not_found")
            // Still serving.
            let ok = try await post("/v1/embeddings", try json(["model": "wn-verb", "input": "still here"]))
            #expect(ok.status == .ok)
        }
    }

    @Test("With truncation on, a long text is cut to the limit and marked truncated")
    func truncation() async throws {
        let server = try await ServeFixture.server {
            $0.maxLength = 16
            $0.truncate = true
        }
        let long = Array(repeating: "word", count: 40).joined(separator: " ")
        let body = try await server.application().test(.router) { client in
            try object(
                try await client.execute(
                    uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                    body: try json(["model": "wn-verb", "input": ["short", long], "encoding_format": "base64"])))
        }
        let data = try #require(body["data"] as? [[String: Any]])
        #expect(data[0]["truncated"] == nil)
        #expect(data[1]["truncated"] as? Bool == true)
        #expect((body["usage"] as? [String: Any])?["prompt_tokens"] as? Int == 3 + 16)
        let expected = try ServeFixture.encoder.embed(
            [long], packs: [ServeFixture.pack("wn-verb")], maxLength: 16, batchSize: 64)
        // Not bit for bit: in the mixed forward the short text's rows share the products with the long one's.
        #expect(maxDifference(try floats(base64: data[1]["embedding"] as? String ?? ""), expected) <= 1e-5)
    }

    @Test("A full queue answers 429 with Retry-After")
    func queueFull() async throws {
        let server = try await ServeFixture.server {
            $0.maxInputs = 2
            $0.maxQueuedTexts = 2
            $0.maxWaitMilliseconds = 400
        }
        try await server.application().test(.router) { client in
            async let first = client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "wn-verb", "input": ["a", "b"]]))
            try await Task.sleep(for: .milliseconds(100))
            let second = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json(["model": "lang-id", "input": ["c"]]))
            try expectError(second, .tooManyRequests, code: "queue_full")
            #expect(second.headers[.retryAfter] == "1")
            #expect(try await first.status == .ok)
        }
    }

    @Test("Packs are added and removed with the admin token, validated first; refusals name why and change nothing")
    func packManagement() async throws {
        let server = try await ServeFixture.shared.value
        let noun = try Data(contentsOf: ServeFixture.repository.appendingPathComponent("packs/wn-noun.tsw"))
        var foreign = try ServeFixture.pack("wn-noun")
        foreign.baseFingerprint = BaseFingerprint(value: foreign.baseFingerprint.value ^ 1)
        let otherBase = foreign
        var bytes = [UInt8](noun)
        bytes[8] = 99  // the format version
        let newer = bytes
        bytes = [UInt8](noun)
        bytes[bytes.count / 2] ^= 0xFF
        let corrupt = bytes
        try await server.application(runsQueue: false).test(.router) { client in
            let admin: HTTPFields = [.authorization: "Bearer secret"]
            func put(_ task: String, _ bytes: [UInt8], _ headers: HTTPFields = admin) async throws -> TestResponse {
                try await client.execute(
                    uri: "/v1/packs/\(task)", method: .put, headers: headers, body: ByteBuffer(bytes: bytes))
            }
            try expectError(
                try await put("wn-noun", [UInt8](noun), [.authorization: "Bearer wrong"]), .unauthorized,
                code: "unauthorized")
            try expectError(try await put("wn-noun", [UInt8](noun), [:]), .unauthorized, code: "unauthorized")
            let checksum = try expectError(try await put("wn-noun", corrupt), .badRequest, code: "pack_refused")
            #expect((checksum["message"] as? String)?.contains("corrupt") == true)
            // Another base's pack (checked after decoding, so given decoded: encoding one is slow in a debug build).
            let refusal = await #expect(throws: ServingError.self) {
                try await server.queue.install(otherBase, source: "upload")
            }
            #expect(refusal?.code == .packRefused && refusal?.status == .badRequest)
            #expect(refusal?.message.contains("another base") == true)
            let version = try expectError(try await put("wn-noun", newer), .badRequest, code: "pack_refused")
            #expect((version["message"] as? String)?.contains("newer") == true)
            let name = try expectError(try await put("other", [UInt8](noun)), .badRequest, code: "pack_refused")
            #expect((name["message"] as? String)?.contains("wn-noun") == true)
            try expectError(
                try await client.execute(
                    uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                    body: try json(["model": "wn-noun", "input": "x"])),
                .notFound, code: "model_not_found")

            let added = try await put("wn-noun", [UInt8](noun))
            #expect(added.status == .created)
            let served = try await client.execute(
                uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                body: try json([
                    "model": "wn-noun", "input": ["dog: a domesticated canid"], "encoding_format": "base64",
                ]))
            #expect(served.status == .ok)
            let row = try floats(
                base64: (try object(served)["data"] as? [[String: Any]])?.first?["embedding"] as? String ?? "")
            let expected = try ServeFixture.encoder.embed(
                ["dog: a domesticated canid"], packs: [ServeFixture.pack("wn-noun")], maxLength: 128, batchSize: 64)
            #expect(row == expected)

            try expectError(
                try await client.execute(
                    uri: "/v1/packs/wn-noun", method: .delete, headers: [.authorization: "Bearer nope"]),
                .unauthorized, code: "unauthorized")
            let deleted = try await client.execute(uri: "/v1/packs/wn-noun", method: .delete, headers: admin)
            #expect(deleted.status == .ok)
            try expectError(
                try await client.execute(uri: "/v1/packs/wn-noun", method: .delete, headers: admin), .notFound,
                code: "model_not_found")
            try expectError(
                try await client.execute(
                    uri: "/v1/embeddings", method: .post, headers: jsonHeaders,
                    body: try json(["model": "wn-noun", "input": "x"])),
                .notFound, code: "model_not_found")
        }
    }

    @Test("Without an admin token, pack management is off (403)")
    func adminDisabled() async throws {
        let server = try await ServeFixture.server { $0.adminToken = nil }
        try await server.application().test(.router) { client in
            _ = try expectError(
                try await client.execute(
                    uri: "/v1/packs/wn-verb", method: .delete, headers: [.authorization: "Bearer x"]),
                .forbidden, code: "admin_disabled")
        }
    }
}
