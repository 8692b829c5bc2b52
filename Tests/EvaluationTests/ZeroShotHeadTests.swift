import CheckpointIO
import Foundation
import TaskSwitches
import TestSupport
import Testing

@testable import Evaluation

@Suite("Zero-shot heads")
struct ZeroShotHeadTests {
    static let encoder: SentenceEncoder = {
        do { return try SentenceEncoder(path: EvalFixture.modelFolder.path) } catch { fatalError("\(error)") }
    }()

    /// A fresh temporary folder.
    static func folder() throws -> URL {
        let dir = try temporaryFolder()
        return dir
    }

    static func writeJSON(_ object: [String: Any], to url: URL) throws {
        try JSONSerialization.data(withJSONObject: object).write(to: url)
    }

    static let classes = ZeroShotHead.Classes(
        labels: ["english", "french", "syscall"], descriptions: ["an English word", "a French word", "a system call"])

    @Test("rows are the L2-normalized embeddings of the descriptions put into the template, and the bias is 0")
    func rows() throws {
        let head = ZeroShotHead.make(encoder: Self.encoder, classes: Self.classes, template: "text: {}")
        #expect(head.classes == 3 && head.hidden == Self.encoder.hiddenSize)
        #expect(head.bias == [0, 0, 0])
        #expect(head.logitScale == 100)
        #expect(head.labels == Self.classes.labels)
        let prompts = ["text: an English word", "text: a French word", "text: a system call"]
        #expect(ZeroShotHead.prompts(Self.classes.descriptions, template: "text: {}") == prompts)
        let expected = Self.encoder.embed(prompts, maxLength: 256, normalize: true)
        #expect(head.weight == expected)
        for c in 0..<3 {
            let row = head.weight[(c * head.hidden)..<((c + 1) * head.hidden)]
            let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
            #expect(abs(norm - 1) < 1e-5)
        }
        // The template matters: the plain descriptions give other rows.
        let plain = ZeroShotHead.make(encoder: Self.encoder, classes: Self.classes)
        #expect(plain.weight == Self.encoder.embed(Self.classes.descriptions, maxLength: 256, normalize: true))
        #expect(plain.weight != head.weight)
    }

    @Test("the logit scale is stored in the file's metadata and read back with the rows and the labels beside")
    func roundTrip() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let head = ZeroShotHead.make(encoder: Self.encoder, classes: Self.classes, logitScale: 42.5)
        let path = dir.appendingPathComponent("head.safetensors").path
        try head.write(path: path, metadata: ["kind": "zero-shot"])
        let file = try SafeTensorsFile(path: path)
        #expect(file.metadata["logit_scale"] == "42.5")
        #expect(file.metadata["kind"] == "zero-shot")
        #expect(file.info("weight")?.dtype == .F32 && file.info("weight")?.shape == [3, Self.encoder.hiddenSize])
        let back = try LinearHead(path: path)
        #expect(back.logitScale == 42.5 && back.weight == head.weight && back.bias == head.bias && back.labels == nil)
        try Self.writeJSON(
            ["labels": Self.classes.labels, "descriptions": Self.classes.descriptions],
            to: dir.appendingPathComponent("labels.json"))
        #expect(try LinearHead(path: path) == head)
        #expect(
            try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == [
                "head.safetensors", "labels.json",
            ])
    }

    @Test("a plain linear head has no logit scale and keeps its logits; a written plain head has no logit_scale")
    func plainHead() throws {
        let head = LinearHead(weight: [1, 2, -1, 0.5], bias: [0.25, -0.5], classes: 2, hidden: 2)
        #expect(head.logitScale == nil)
        let expected: [Float] = [0.25 + 2 + 8, -0.5 - 2 + 2]
        #expect(head.logits([2, 4]) == expected)
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("head.safetensors").path
        try head.write(path: path)
        #expect(try SafeTensorsFile(path: path).metadata["logit_scale"] == nil)
        #expect(try LinearHead(path: path) == head)
    }

    @Test("a cosine head scores scale x cos(feature, row): feature length does not change logits or predictions")
    func cosineLogits() {
        let s: Float = 0.6
        let c: Float = 0.8
        let head = LinearHead(weight: [1, 0, s, c], bias: [0, 0], classes: 2, hidden: 2, logitScale: 100)
        let features: [Float] = [3, 0, 0, 0.5, 30, 40]
        let logits = head.logits(features)
        let expected: [Float] = [100, 100 * s, 0, 100 * c, 100 * s, 100 * (s * s + c * c)]
        #expect(zip(logits, expected).allSatisfy { abs($0 - $1) < 1e-4 }, "\(logits)")
        #expect(head.predict(features) == [0, 1, 1])
        // A zero feature stays zero (no NaN) and goes to class 0, as argmax does.
        #expect(head.logits([0, 0]) == [0, 0] && head.predict([0, 0]) == [0])
    }

    @Test(
        "a labels.json without descriptions, with a count mismatch or an empty description is refused naming the file")
    func badLabels() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("labels.json")
        try Self.writeJSON(["labels": ["a", "b"], "source": "x"], to: url)
        let missing = EvalFixture.error { _ = try ZeroShotHead.readClasses(labelsPath: url.path) }
        #expect(missing?.code == .invalidData)
        #expect(missing?.message.contains(url.path) == true && missing?.message.contains("descriptions") == true)
        try Self.writeJSON(["labels": ["a", "b"], "descriptions": ["an a"]], to: url)
        let mismatch = EvalFixture.error { _ = try ZeroShotHead.readClasses(labelsPath: url.path) }
        #expect(mismatch?.code == .incompatible)
        #expect(
            mismatch?.message.contains(url.path) == true
                && mismatch?.message.contains("1 descriptions for 2 labels") == true)
        try Self.writeJSON(["labels": ["a", "b"], "descriptions": ["an a", " "]], to: url)
        let empty = EvalFixture.error { _ = try ZeroShotHead.readClasses(labelsPath: url.path) }
        #expect(empty?.code == .invalidData && empty?.message.contains(url.path) == true)
        try Self.writeJSON(["labels": ["a", "b"], "descriptions": ["an a", "a b"]], to: url)
        #expect(
            try ZeroShotHead.readClasses(labelsPath: url.path)
                == .init(labels: ["a", "b"], descriptions: ["an a", "a b"]))
        let gone = EvalFixture.error {
            _ = try ZeroShotHead.readClasses(labelsPath: dir.appendingPathComponent("none.json").path)
        }
        #expect(gone?.code == .io && gone?.message.contains("none.json") == true)
    }

    @Test("every shipped task's labels.json has one description per class")
    func shippedTasks() throws {
        let tasks = EvalFixture.repository.appendingPathComponent("data/tasks")
        let names = try FileManager.default.contentsOfDirectory(atPath: tasks.path).filter {
            FileManager.default.fileExists(atPath: tasks.appendingPathComponent("\($0)/labels.json").path)
        }
        #expect(names.count >= 20)
        for name in names {
            let classes = try ZeroShotHead.readClasses(
                labelsPath: tasks.appendingPathComponent("\(name)/labels.json").path)
            #expect(classes.labels.count >= 2, "\(name)")
        }
    }

    @Test("a head file whose logit_scale is not a finite positive number is refused naming the file")
    func badScale() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("head.safetensors").path
        for bad in ["-1", "0", "nan", "inf", "x"] {
            let writer = try SafeTensorsWriter(
                path: path,
                tensors: [
                    TensorSpec(name: "weight", dtype: .F32, shape: [1, 2]),
                    TensorSpec(name: "bias", dtype: .F32, shape: [1]),
                ],
                metadata: ["logit_scale": bad])
            try writer.write("weight", floats: [1, 0] as [Float])
            try writer.write("bias", floats: [0] as [Float])
            try writer.finish()
            let e = EvalFixture.error { _ = try LinearHead(path: path) }
            #expect(e?.code == .invalidData && e?.message.contains(path) == true, "\(bad)")
        }
    }

    @Test("a folder of tasks evaluates the tasks that have a head; the others are named as left out")
    func taskFolders() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fm = FileManager.default
        for t in ["b", "a", "c", "d"] {
            try fm.createDirectory(at: dir.appendingPathComponent("data/\(t)"), withIntermediateDirectories: true)
            if t != "d" { try Data().write(to: dir.appendingPathComponent("data/\(t)/test.jsonl")) }
        }
        for t in ["a", "c", "d", "e"] {
            try fm.createDirectory(at: dir.appendingPathComponent("heads/\(t)"), withIntermediateDirectories: true)
            try Data().write(to: dir.appendingPathComponent("heads/\(t)/head.safetensors"))
        }
        let found = try TaskDiscovery.split(
            dataFolder: dir.appendingPathComponent("data").path, headFolder: dir.appendingPathComponent("heads").path)
        #expect(found.tasks.map(\.name) == ["a", "c"])
        #expect(found.withoutHead == ["b"])
    }

    @Test(
        "a pack carries a zero-shot head's logit scale: read from the head file, kept through the pack file, written back by apply's head file"
    )
    func packCarriesLogitScale() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let head = ZeroShotHead.make(encoder: Self.encoder, classes: Self.classes, logitScale: 42.5)
        let path = dir.appendingPathComponent("head.safetensors").path
        try head.write(path: path)
        let tensors = try SwitchApplier.readHead(path)
        #expect(tensors.map(\.name).sorted() == ["bias", DenseTensor.logitScaleName, "weight"])
        let pack = SwitchPack(
            task: "zs", baseFingerprint: BaseFingerprint(value: 7), dropRatio: 0.7, tieRule: .lowestIndex,
            tensors: [], head: tensors, labels: Self.classes.labels)
        let decoded = try PackFile.decode(PackFile.encode(pack), file: "zs.tsw")
        let fromPack = try #require(try LinearHead.of(pack: decoded, hidden: Self.encoder.hiddenSize))
        #expect(fromPack == head)
        // `tswitch apply` writes the pack's head as a head file; the scale goes back into its metadata.
        let written = dir.appendingPathComponent("applied.safetensors").path
        try Data(SwitchApplier.headFile(decoded.head, task: "zs")).write(to: URL(fileURLWithPath: written))
        let file = try SafeTensorsFile(path: written)
        #expect(file.metadata[DenseTensor.logitScaleName] == "42.5")
        #expect(file.info(DenseTensor.logitScaleName) == nil)
        #expect(try LinearHead(path: written).logitScale == 42.5)
        // A plain linear head's pack has no scale.
        let plain = SwitchPack(
            task: "lp", baseFingerprint: BaseFingerprint(value: 7), dropRatio: 0.7, tieRule: .lowestIndex, tensors: [],
            head: [
                DenseTensor(name: "weight", shape: [1, 2], values: [1, 2]),
                DenseTensor(name: "bias", shape: [1], values: [0]),
            ])
        #expect(try LinearHead.of(pack: plain, hidden: 2)?.logitScale == nil)
    }

    @Test("a bad logit scale in a head file or a pack is refused with the file or pack named")
    func badLogitScale() throws {
        let dir = try Self.folder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("head.safetensors").path
        // Written by hand: LinearHead.write keeps only a valid scale.
        var bytes = SafeTensorsHeader.encode(
            [
                TensorSpec(name: "weight", dtype: .F32, shape: [1, 2]),
                TensorSpec(name: "bias", dtype: .F32, shape: [1]),
            ],
            metadata: ["logit_scale": "-3"])
        for v: Float in [1, 0, 0] { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect {
            try SwitchApplier.readHead(path)
        } throws: { ($0 as? SwitchError)?.message.contains("\(path): metadata 'logit_scale' is \"-3\"") == true }
        let pack = SwitchPack(
            task: "bad", baseFingerprint: BaseFingerprint(value: 7), dropRatio: 0.7, tieRule: .lowestIndex, tensors: [],
            head: [
                DenseTensor(name: "weight", shape: [1, 2], values: [1, 2]),
                DenseTensor(name: "bias", shape: [1], values: [0]),
                DenseTensor(name: "logit_scale", shape: [1], values: [.nan]),
            ])
        #expect {
            try LinearHead.of(pack: pack, hidden: 2)
        } throws: { ($0 as? EvaluationError)?.message.contains("pack 'bad'") == true }
        #expect {
            try LinearHead.of(pack: pack, hidden: 3)
        } throws: { ($0 as? EvaluationError)?.message.contains("[classes, 3]") == true }
    }
}
