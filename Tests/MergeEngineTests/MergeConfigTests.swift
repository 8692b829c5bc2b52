import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import MergeEngine

/// Parses one YAML document, expecting success.
func parseOne(_ yaml: String) throws -> MergeConfig {
    let configs = try MergeConfigParser.parse(yaml, file: "test.yml")
    #expect(configs.count == 1)
    return configs[0]
}

/// The MergeError a throwing call raises, or nil.
func mergeError(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> MergeError? {
    thrownError(MergeError.self, sourceLocation: sourceLocation, body)
}

@Suite("mergekit YAML: parsing, precedence, gradients and filters")
struct MergeConfigTests {
    @Test("a list of numbers is interpolated linearly over the layers, as mergekit does")
    func gradient() {
        let g = ParameterSetting.gradient([.number(0), .number(1), .number(0.5)])
        #expect(g.evaluate(tensorName: "x", t: 0) == .number(0))
        #expect(g.evaluate(tensorName: "x", t: 0.25) == .number(0.5))
        #expect(g.evaluate(tensorName: "x", t: 0.75) == .number(0.75))
        #expect(g.evaluate(tensorName: "x", t: 1) == .number(0.5))
    }

    @Test("the first conditional whose filter is a substring of the tensor name wins; no match falls through")
    func filters() throws {
        let c = try parseOne(
            """
            merge_method: ties
            base_model: b
            models:
              - model: a
                parameters:
                  weight: [{filter: mlp, value: 0.3}, {filter: attn, value: [0, 1]}]
            """)
        let w = try #require(c.models?[0].parameters.settings["weight"])
        #expect(w.evaluate(tensorName: "model.layers.0.mlp.up_proj.weight", t: 0.5) == .number(0.3))
        #expect(w.evaluate(tensorName: "model.layers.0.self_attn.q_proj.weight", t: 0.5) == .number(0.5))
        #expect(w.evaluate(tensorName: "model.norm.weight", t: 0) == nil)
    }

    @Test("unknown keys, unknown methods and bad values are errors that name the line")
    func unknownKeys() {
        let e1 = mergeError { _ = try parseOne("merge_method: ties\nbase_model: b\nmodles:\n  - model: a\n") }
        #expect(e1?.code == .unknownKey)
        #expect(e1?.message.hasPrefix("test.yml:3:") == true)
        #expect(e1?.message.contains("modles") == true)
        let e2 = mergeError { _ = try parseOne("models:\n  - model: a\nmerge_method: tiez\n") }
        #expect(e2?.code == .unknownMethod)
        #expect(e2?.message.hasPrefix("test.yml:3:") == true)
        let e3 = mergeError {
            _ = try parseOne("merge_method: linear\nmodels:\n  - model: a\n    parameters: {weight: heavy}\n")
        }
        #expect(e3?.code == .invalidConfig)
        #expect(e3?.message.contains("test.yml:4") == true)
        let e4 = mergeError {
            _ = try parseOne("merge_method: linear\nmodels:\n  - model: a\n    layer_range: [0, 2]\n")
        }
        #expect(e4?.code == .unknownKey)
        let e5 = mergeError { _ = try parseOne("merge_method: linear\n") }
        #expect(e5?.code == .invalidConfig)
        let e6 = mergeError { _ = try parseOne("merge_method: linear\nmodels: [{model: a}]\ndtype: int8\n") }
        #expect(e6?.message.contains("test.yml:3") == true)
    }

    @Test("parameters resolve slice-source > slice > global, defaults last, and required ones must be set")
    func precedence() throws {
        let yaml = """
            merge_method: ties
            base_model: ./models/base
            slices:
              - sources:
                  - model: ./models/base
                    layer_range: [0, 2]
                  - model: ./models/a
                    layer_range: [0, 2]
                    parameters: {weight: 0.9}
                  - model: ./models/b
                    layer_range: [0, 2]
                parameters: {density: 0.4}
            parameters:
              weight: 0.2
              density: 0.7
              lambda: [1, 2]
            """
        let config = try MergeConfigParser.parse(yaml, file: Fixtures.config("inline"))[0]
        let plan = try MergePlan(config: config, resolver: ModelResolver(configDirectory: Fixtures.directory.path))
        let t = try #require(plan.tensors.first { $0.name == "model.layers.1.mlp.up_proj.weight" })
        let a = try #require(t.inputs.first { plan.models[$0.model].reference == "./models/a" })
        let b = try #require(t.inputs.first { plan.models[$0.model].reference == "./models/b" })
        #expect(a.parameters["weight"] == .number(0.9))
        #expect(b.parameters["weight"] == .number(0.2))
        #expect(a.parameters["density"] == .number(0.4))
        #expect(t.parameters["lambda"] == .number(2))  // last layer: t = 1
        #expect(t.parameters["normalize"] == .bool(true))  // TIES default
        #expect(t.inputs.first { $0.isBase }?.parameters.isEmpty == true)
        // Embeddings and the final norm use t = 0 (mergekit's planner).
        let norm = try #require(plan.tensors.first { $0.name == "model.norm.weight" })
        #expect(norm.parameters["lambda"] == .number(1))
        // Tied lm_head is not planned; every planned name is unique.
        #expect(!plan.tensors.contains { $0.name == "lm_head.weight" })
        #expect(Set(plan.tensors.map(\.name)).count == plan.tensors.count)

        let missing = try MergeConfigParser.parse(
            yaml.replacingOccurrences(of: "  weight: 0.2\n", with: ""), file: Fixtures.config("inline"))[0]
        let e = mergeError {
            _ = try MergePlan(config: missing, resolver: ModelResolver(configDirectory: Fixtures.directory.path))
        }
        #expect(e?.code == .missingParameter)
        #expect(e?.message.contains("'weight'") == true && e?.message.contains("./models/b") == true)
    }

    @Test("method contracts: a base is required where mergekit requires one, input counts are checked")
    func contracts() throws {
        let dir = Fixtures.directory.path
        let noBase = try MergeConfigParser.parse(
            "merge_method: ties\nmodels:\n  - model: ./models/a\n    parameters: {weight: 1}\n",
            file: Fixtures.config("x"))[0]
        #expect(
            mergeError { _ = try MergePlan(config: noBase, resolver: ModelResolver(configDirectory: dir)) }?.code
                == .invalidInputs)
        let slerp3 = try MergeConfigParser.parse(
            "merge_method: slerp\nbase_model: ./models/base\nmodels:\n  - model: ./models/a\n  - model: ./models/b\nparameters: {t: 0.5}\n",
            file: Fixtures.config("x"))[0]
        let e = mergeError { _ = try MergePlan(config: slerp3, resolver: ModelResolver(configDirectory: dir)) }
        #expect(e?.code == .invalidInputs)
        #expect(e?.message.contains("exactly 1") == true)
    }
}

@Suite("Inputs: model resolution, missing tensors and shape mismatches")
struct MergeInputTests {
    /// Writes a one-file model folder with the base's tensors, transformed by `edit` (nil drops a tensor).
    static func variant(_ tag: String, _ edit: (TensorInfo) -> [Int]??) throws -> String {
        let dir = Fixtures.scratch(tag)
        let base = try ModelFolder(path: Fixtures.model("base"))
        var specs: [TensorSpec] = []
        for info in base.tensorInfos {
            switch edit(info) {
            case .none: specs.append(TensorSpec(name: info.name, dtype: .F32, shape: info.shape))
            case .some(.none): continue
            case .some(.some(let shape)): specs.append(TensorSpec(name: info.name, dtype: .F32, shape: shape))
            }
        }
        let writer = try ModelWriter(directory: dir, tensors: specs)
        for s in specs { try writer.write(s.name, floats: [Float](repeating: 0.5, count: s.elementCount)) }
        try writer.copySupportFiles(from: base, dtype: .F32)
        try writer.finish()
        return dir
    }

    static func plan(with other: String) throws -> MergePlan {
        let yaml =
            "merge_method: task_arithmetic\nbase_model: \(Fixtures.model("base"))\nmodels:\n  - model: \(other)\n    parameters: {weight: 1}\n"
        let config = try MergeConfigParser.parse(yaml, file: "inline.yml")[0]
        return try MergePlan(config: config, resolver: ModelResolver(configDirectory: nil))
    }

    @Test("a tensor whose shape differs is an error naming the tensor and every model's shape")
    func shapeMismatch() throws {
        let odd = try Self.variant("shape") { $0.name == "model.norm.weight" ? .some([32]) : .none }
        defer { try? FileManager.default.removeItem(atPath: odd) }
        let e = mergeError { _ = try Self.plan(with: odd) }
        #expect(e?.code == .shapeMismatch)
        #expect(e?.message.contains("'model.norm.weight'") == true)
        #expect(e?.message.contains("\(odd): 32") == true && e?.message.contains(": 64") == true)
    }

    @Test("a tensor missing from one input is an error naming the tensor and the model")
    func missingTensor() throws {
        let lacking = try Self.variant("missing") { $0.name.contains("layers.1.mlp.down_proj") ? .some(nil) : .none }
        defer { try? FileManager.default.removeItem(atPath: lacking) }
        let e = mergeError { _ = try Self.plan(with: lacking) }
        #expect(e?.code == .missingTensor)
        #expect(e?.message.contains("model.layers.1.mlp.down_proj.weight") == true)
        #expect(e?.message.contains(lacking) == true)
    }

    @Test("an integer buffer that a fine-tune omits (BERT's position_ids) is copied from the model that has it")
    func bufferMissingFromFineTune() throws {
        // A base with an I64 buffer, and a fine-tune saved without it, as transformers does.
        let base = try ModelFolder(path: Fixtures.model("base"))
        let withBuffer = Fixtures.scratch("buffer-base")
        let positions: [Int64] = Array(0..<16)
        var specs = base.tensorInfos.map { TensorSpec(name: $0.name, dtype: .F32, shape: $0.shape) }
        specs.append(TensorSpec(name: "embeddings.position_ids", dtype: .I64, shape: [1, 16]))
        let writer = try ModelWriter(directory: withBuffer, tensors: specs)
        for info in base.tensorInfos { try writer.write(info.name, floats: try base.tensor(info.name).floats()) }
        try positions.withUnsafeBytes { try writer.write("embeddings.position_ids", bytes: $0) }
        try writer.copySupportFiles(from: base, dtype: .F32)
        try writer.finish()
        let fineTune = try Self.variant("buffer-ft") { _ in .none }
        let out = Fixtures.scratch("buffer-out")
        defer { for d in [withBuffer, fineTune, out] { try? FileManager.default.removeItem(atPath: d) } }

        let yaml =
            "merge_method: task_arithmetic\nbase_model: \(withBuffer)\nmodels:\n  - model: \(fineTune)\n    parameters: {weight: 1}\n"
        let configs = try MergeConfigParser.parse(yaml, file: "inline.yml")
        try MergeEngine.run(configs: configs, configDirectory: nil, output: out)
        let merged = try ModelFolder(path: out)
        let copied = try merged.tensor("embeddings.position_ids")
        #expect(copied.dtype == .I64 && copied.shape == [1, 16])
        #expect(Array(copied.bytes) == positions.withUnsafeBytes { Array($0) })
        // Float tensors present in both are still merged, not copied.
        #expect(merged.contains("model.norm.weight"))
    }

    @Test("a Hugging Face id resolves through the local hub cache and never downloads")
    func huggingFaceCache() throws {
        let hub = Fixtures.scratch("hub")
        defer { try? FileManager.default.removeItem(atPath: hub) }
        let repo = URL(fileURLWithPath: hub).appendingPathComponent("models--org--tiny")
        let snapshot = repo.appendingPathComponent("snapshots/0123abc")
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: repo.appendingPathComponent("refs"), withIntermediateDirectories: true)
        try "0123abc".write(to: repo.appendingPathComponent("refs/main"), atomically: true, encoding: .utf8)
        let resolver = ModelResolver(configDirectory: nil, hubCache: hub)
        #expect(try resolver.resolve("org/tiny", file: "c.yml") == snapshot.path)
        let e = mergeError { _ = try resolver.resolve("org/absent", file: "c.yml") }
        #expect(e?.code == .modelNotFound)
        #expect(e?.message.contains("never downloads") == true)
    }

    @Test("layer indices are found after layers/h/blocks and rewritten in place")
    func layerNames() {
        let l = LayerName("model.layers.12.mlp.up_proj.weight")
        #expect(l?.index == 12)
        #expect(l?.with(index: 3) == "model.layers.3.mlp.up_proj.weight")
        #expect(LayerName("transformer.h.0.attn.c_attn.weight")?.index == 0)
        #expect(LayerName("model.embed_tokens.weight") == nil)
        #expect(LayerName.isPreLayer("model.embed_tokens.weight"))
        #expect(!LayerName.isPreLayer("lm_head.weight"))
    }
}

@Suite("Merge kernels on hand-made tensors")
struct MergeKernelTests {
    /// Runs a method on in-memory tensors (base + models) and returns the output.
    static func run(
        _ method: any MergeMethod.Type, base: [Float], models: [[Float]], perModel: [String: ParameterValue],
        shared: [String: ParameterValue] = [:], seed: UInt64 = 0
    ) throws -> [Float] {
        var out = [Float](repeating: .nan, count: base.count)
        var failure: MergeError?
        base.withUnsafeBufferPointer { b in
            let buffers = models.map { m in
                let p = UnsafeMutableBufferPointer<Float>.allocate(capacity: m.count)
                _ = p.initialize(from: m)
                return p
            }
            defer { for p in buffers { p.deallocate() } }
            var inputs = [MergeInput(model: "base", isBase: true, values: b, parameters: [:])]
            for (i, p) in buffers.enumerated() {
                inputs.append(
                    MergeInput(model: "m\(i)", isBase: false, values: UnsafeBufferPointer(p), parameters: perModel))
            }
            var params = shared
            for spec in method.parameters where spec.scope == .shared && params[spec.name] == nil {
                params[spec.name] = spec.defaultValue
            }
            let ctx = TensorMergeContext(
                tensorName: "t", shape: [base.count], inputs: inputs, parameters: params, seed: seed)
            out.withUnsafeMutableBufferPointer { o in
                do throws(MergeError) { try method.merge(ctx, into: o) } catch { failure = error }
            }
        }
        if let failure { throw failure }
        return out
    }

    /// 40 000 ties are counted from the level-2 bucket members; 300 000 overflow that list and take the extra pass.
    @Test(
        "TIES keeps exactly k entries when many are tied at the threshold, the first ones across blocks",
        arguments: [40_000, 300_000])
    func tiesTieBreak(n: Int) throws {
        let base = [Float](repeating: 0, count: n)
        var model = [Float](repeating: 0.25, count: n)
        for i in stride(from: 5, to: n, by: 1000) { model[i] = 0.5 }  // a few strictly larger entries, always kept
        let out = try Self.run(
            TiesMerge.self, base: base, models: [model], perModel: ["weight": .number(1), "density": .number(0.3)])
        let k = Int(0.3 * Double(n))
        let kept = out.indices.filter { out[$0] != 0 }
        #expect(kept.count == k)
        let larger = (n - 5 + 999) / 1000
        #expect(kept.filter { out[$0] == 0.5 }.count == larger)
        // The tied entries kept are the first k − larger ones in index order.
        let tiedKept = kept.filter { out[$0] == 0.25 }
        #expect(tiedKept.count == k - larger)
        #expect(tiedKept.last.map { i in (0...i).filter { model[$0] == 0.25 }.count } == k - larger)
    }

    @Test("TIES elects the sign by weighted sum and averages only the agreeing entries")
    func tiesElection() throws {
        let base: [Float] = [0, 0, 0, 0]
        let a: [Float] = [1, -1, 2, 0]
        let b: [Float] = [3, 2, -1, 0]
        let out = try Self.run(
            TiesMerge.self, base: base, models: [a, b], perModel: ["weight": .number(1), "density": .number(1)])
        // entry 0: both +, mean 2; entry 1: sum +1 → keep +2 only; entry 2: sum +1 → keep 2; entry 3: nothing → 0.
        #expect(out == [2, 2, 2, 0])
    }

    @Test("task arithmetic with a negative weight removes a task (forgetting)")
    func forgetting() throws {
        let base: [Float] = [1, 2, 3]
        let tuned: [Float] = [2, 2, 5]
        let out = try Self.run(TaskArithmeticMerge.self, base: base, models: [tuned], perModel: ["weight": .number(-1)])
        #expect(out == [0, 2, 1])
    }

    @Test("DARE keeps about density of the entries and rescales to the task vector's L1 norm")
    func dare() throws {
        let n = 100_000
        var g = SplitMix64(seed: 1)
        let base = (0..<n).map { _ in g.nextUnitFloat() }
        let tuned = base.map { $0 + 0.01 }
        let out = try Self.run(
            DareLinearMerge.self, base: base, models: [tuned],
            perModel: ["weight": .number(1), "density": .number(0.2)], seed: 9)
        var kept = 0
        var l1 = 0.0
        for i in 0..<n where out[i] != base[i] {
            kept += 1
            l1 += Double(abs(out[i] - base[i]))
        }
        #expect(abs(Double(kept) / Double(n) - 0.2) < 0.01)
        let original = (0..<n).reduce(0.0) { $0 + Double(abs(tuned[$1] - base[$1])) }
        #expect(abs(l1 / original - 1) < 1e-3)
    }

    @Test("multislerp refuses antipodal task vectors whose weights cancel")
    func antipodal() {
        let e = mergeError {
            _ = try Self.run(
                MultiSlerpMerge.self, base: [0, 0], models: [[1, 0], [-1, 0], [0, 0]],
                perModel: ["weight": .number(1)], shared: ["normalize_weights": .bool(true), "eps": .number(1e-8)])
        }
        #expect(e?.code == .numerical)
        #expect(e?.message.contains("'t'") == true)
    }
}

@Suite("Streamed merging straight from stored dtypes")
struct StreamingTests {
    /// BF16 inputs of 50 000 elements (four blocks) streamed into a BF16 sink equal the whole-tensor merge of the
    /// widened inputs, rounded once.
    @Test(
        "streamed TIES, DARE and breadcrumbs over BF16 inputs equal the whole-tensor result",
        arguments: [
            TiesMerge.self as any StreamingMergeMethod.Type, DareTiesMerge.self, BreadcrumbsTiesMerge.self,
            TaskArithmeticMerge.self,
        ])
    func bf16(method: any StreamingMergeMethod.Type) throws {
        let n = 50_000
        var g = SplitMix64(seed: 42)
        func bf16Array(_ f: () -> Float) -> [UInt16] { (0..<n).map { _ in DTypeConversion.bfloat16Bits(f()) } }
        let base = bf16Array { g.nextUnitFloat() - 0.5 }
        let models = (0..<3).map { _ in
            base.map {
                DTypeConversion.bfloat16Bits(
                    DTypeConversion.floatFromBFloat16Bits($0) + (g.nextUnitFloat() - 0.5) * 0.01)
            }
        }
        let perModel: [String: ParameterValue] = [
            "weight": .number(0.8), "density": .number(0.35), "gamma": .number(0.02),
        ]
        var shared: [String: ParameterValue] = [:]
        for s in method.parameters where s.scope == .shared { shared[s.name] = s.defaultValue }

        // Buffers that outlive both merges.
        let raw = ([base] + models).map { arr in
            let p = UnsafeMutableBufferPointer<UInt16>.allocate(capacity: n)
            _ = p.initialize(from: arr)
            return p
        }
        let widened = raw.map { r in
            let p = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
            for i in 0..<n { p[i] = DTypeConversion.floatFromBFloat16Bits(r[i]) }
            return p
        }
        defer { for p in raw { p.deallocate() }; for p in widened { p.deallocate() } }

        // Streamed: BF16 sources, BF16 sink.
        let inputs = raw.enumerated().map { i, r in
            StreamingInput(
                model: "m\(i)", isBase: i == 0,
                source: TensorSource(bytes: UnsafeRawBufferPointer(r), dtype: .BF16, count: n),
                parameters: i == 0 ? [:] : perModel)
        }
        let ctx = StreamingMergeContext(tensorName: "x", shape: [n], inputs: inputs, parameters: shared, seed: 3)
        var streamed = [UInt16](repeating: 0, count: n)
        try streamed.withUnsafeMutableBytes { out in
            try method.mergeStreaming(ctx, into: TensorSink(bytes: out, dtype: .BF16, count: n))
        }
        // Whole tensor: widened inputs, merged in f32, rounded once.
        let wholeInputs = widened.enumerated().map { i, w in
            MergeInput(
                model: "m\(i)", isBase: i == 0, values: UnsafeBufferPointer(w), parameters: i == 0 ? [:] : perModel)
        }
        let wctx = TensorMergeContext(tensorName: "x", shape: [n], inputs: wholeInputs, parameters: shared, seed: 3)
        var whole = [Float](repeating: 0, count: n)
        try whole.withUnsafeMutableBufferPointer { try method.merge(wctx, into: $0) }
        let rounded = whole.map(DTypeConversion.bfloat16Bits)
        #expect(streamed == rounded)
        #expect(Set(streamed).count > 1000)  // a real merge, not a constant
    }
}
