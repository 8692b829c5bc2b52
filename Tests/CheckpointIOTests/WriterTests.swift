import Foundation
import TestSupport
import Testing

@testable import CheckpointIO

@Suite("SafeTensorsWriter and ModelWriter")
struct WriterTests {
    static func values(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SplitMix(seed)
        return (0..<n).map { _ in Float(rng.normal()) }
    }

    static func rounded(_ v: [Float], _ dtype: DType) -> [Float] {
        switch dtype {
        case .F16: v.map { DTypeConversion.floatFromHalfBits(DTypeConversion.halfBits($0)) }
        case .BF16: v.map { DTypeConversion.floatFromBFloat16Bits(DTypeConversion.bfloat16Bits($0)) }
        default: v
        }
    }

    func hiddenEntries(_ folder: URL) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []).filter { $0.hasPrefix(".") }
    }

    @Test("A file written in F32, F16, BF16 and F64 reads back with the rounded values, metadata and padding")
    func roundTrip() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("out.safetensors").path
        let specs = [
            TensorSpec(name: "a.f32", dtype: .F32, shape: [3, 7]),
            TensorSpec(name: "b.f16", dtype: .F16, shape: [5]),
            TensorSpec(name: "c.bf16", dtype: .BF16, shape: [2, 3, 3]),
            TensorSpec(name: "d.f64", dtype: .F64, shape: [3]),
            TensorSpec(name: "e.scalar", dtype: .BF16, shape: []),
            TensorSpec(name: "f.empty", dtype: .F16, shape: [0, 3]),
        ]
        let data = specs.enumerated().map { Self.values($0.element.elementCount, seed: UInt64($0.offset)) }
        let writer = try SafeTensorsWriter(path: path, tensors: specs, metadata: ["format": "pt", "k": "v\"q"])
        for (s, v) in zip(specs, data) { try writer.write(s.name, floats: v) }
        try writer.finish()

        let file = try SafeTensorsFile(path: path)
        #expect(file.header.dataStart % 8 == 0, "header padded to 8 bytes like the reference writer")
        #expect(file.metadata == ["format": "pt", "k": "v\"q"])
        #expect(file.tensors.map(\.name) == specs.map(\.name))
        for (s, v) in zip(specs, data) {
            let t = try file.tensor(s.name)
            #expect(t.dtype == s.dtype && t.shape == s.shape)
            #expect(try t.floats() == Self.rounded(v, s.dtype), "\(s.name)")
        }
        #expect(hiddenEntries(dir).isEmpty, "no temporary file left behind")
    }

    @Test("Large tensors convert in chunks and match the scalar reference")
    func chunkedConversion() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let n = SafeTensorsWriter.chunkElements + 12_345
        let v = Self.values(n, seed: 42)
        for dtype in [DType.BF16, .F16] {
            let path = dir.appendingPathComponent("\(dtype).safetensors").path
            let writer = try SafeTensorsWriter(path: path, tensors: [TensorSpec(name: "w", dtype: dtype, shape: [n])])
            try writer.write("w", floats: v)
            try writer.finish()
            let back = try SafeTensorsFile(path: path).tensor("w").floats().map(\.bitPattern)
            let want = Self.rounded(v, dtype).map(\.bitPattern)
            let mismatch = zip(back, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            #expect(back.count == want.count && mismatch == nil, "\(dtype): first difference at \(mismatch ?? -1)")
        }
    }

    @Test("Writing out of order, with the wrong size, or too few tensors is an error and leaves no file")
    func misuse() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("x.safetensors").path
        let specs = [TensorSpec(name: "a", dtype: .F32, shape: [2]), TensorSpec(name: "b", dtype: .BF16, shape: [3])]
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        let order = checkpointError { try w.write("b", floats: [1, 2, 3]) }
        #expect(order?.code == .writeOrder)
        #expect(order?.message.contains("'a'") == true && order?.message.contains("'b'") == true)
        let size = checkpointError { try w.write("a", floats: [1, 2, 3]) }
        #expect(size?.code == .writeSize)
        #expect(size?.message.contains(path) == true)
        let bytes = checkpointError {
            try [UInt8](repeating: 0, count: 7).withUnsafeBytes { b in try w.write("a", bytes: b) }
        }
        #expect(bytes?.code == .writeSize)
        try w.write("a", floats: [1, 2])
        let early = checkpointError { try w.finish() }
        #expect(early?.code == .writeOrder)
        #expect(early?.message.contains("'b'") == true)
        try w.write("b", floats: [1, 2, 3])
        let extra = checkpointError { try w.write("c", floats: [1]) }
        #expect(extra?.code == .writeOrder)
        #expect(!FileManager.default.fileExists(atPath: path), "nothing at the target before finish()")
        try w.finish()
        #expect(FileManager.default.fileExists(atPath: path))

        let dup = checkpointError { _ = try SafeTensorsWriter(path: path + "2", tensors: specs + [specs[0]]) }
        #expect(dup?.code == .duplicateTensor)
        let ints = try SafeTensorsWriter(path: path + "3", tensors: [TensorSpec(name: "i", dtype: .I32, shape: [1])])
        #expect(checkpointError { try ints.write("i", floats: [1]) }?.code == .unsupportedDType)
    }

    @Test("The output's blocks are reserved up front: too large for the disk fails at once, naming the file")
    func reservesBlocks() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("big.safetensors").path
        // 2^57 bytes: more than any test machine's disk (ENOSPC) or its file system's largest file (EFBIG).
        let huge = [TensorSpec(name: "w", dtype: .F16, shape: [1 << 56])]
        #expect {
            _ = try SafeTensorsWriter(path: path, tensors: huge)
        } throws: { error in
            let e = error as? CheckpointError
            return e?.code == .io && e?.message.contains(path) == true && e?.message.contains("cannot reserve") == true
                && e?.message.contains("the disk is full") == true
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(hiddenEntries(dir).isEmpty, "the temporary file is gone")
        // A file that fits gets its blocks before a byte is written, and its size still grows only as written.
        let specs = [TensorSpec(name: "w", dtype: .F32, shape: [1 << 20])]
        let w = try SafeTensorsWriter(path: path, tensors: specs)
        let temporary = dir.appendingPathComponent(try #require(hiddenEntries(dir).first)).path
        var st = stat()
        #expect(stat(temporary, &st) == 0)
        #expect(Int(st.st_blocks) * 512 >= 4 << 20 && Int(st.st_size) < 4 << 20)
        try w.write("w", floats: [Float](repeating: 1, count: 1 << 20))
        try w.finish()
        // Exactly the 8-byte length, the header and the data: no reserved tail counted in the size.
        let header = try FileHandle(forReadingFrom: URL(fileURLWithPath: path)).read(upToCount: 8) ?? Data()
        let headerLength = header.withUnsafeBytes { Int($0.loadUnaligned(as: UInt64.self).littleEndian) }
        #expect(stat(path, &st) == 0 && Int(st.st_size) == 8 + headerLength + (4 << 20))
        #expect(try SafeTensorsFile(path: path).tensor("w").floats() == [Float](repeating: 1, count: 1 << 20))
    }

    @Test("An abandoned writer leaves nothing at the target and no temporary file")
    func abandonedFile() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("half.safetensors").path
        do {
            let w = try SafeTensorsWriter(
                path: path,
                tensors: [
                    TensorSpec(name: "a", dtype: .F32, shape: [4]), TensorSpec(name: "b", dtype: .F32, shape: [4]),
                ])
            try w.write("a", floats: [1, 2, 3, 4])
            #expect(hiddenEntries(dir).count == 1, "data goes to a hidden temporary file")
        }
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(hiddenEntries(dir).isEmpty)
    }

    @Test("ModelWriter shards by size with a correct index, copies support files and updates the dtype")
    func shardedModel() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = try ModelFolder(path: Fixture.path("models/bert-f32"))
        let out = dir.appendingPathComponent("model-bf16")
        let specs = source.tensorInfos.map { TensorSpec(name: $0.name, dtype: .BF16, shape: $0.shape) }
        let maxShard = 2048
        let writer = try ModelWriter(directory: out.path, tensors: specs, maxShardBytes: maxShard)
        #expect(writer.shardNames.count > 2)
        try writer.copySupportFiles(from: source, dtype: .BF16)
        for s in specs { try writer.write(s.name, from: try source.tensor(s.name)) }
        #expect(!FileManager.default.fileExists(atPath: out.path))
        try writer.finish()

        let written = try ModelFolder(path: out.path)
        #expect(written.files.count == writer.shardNames.count)
        #expect(written.tensorNames == specs.map(\.name), "storage order is write order")
        for f in written.files where f.tensors.count > 1 {
            #expect(f.tensors.reduce(0) { $0 + $1.byteCount } <= maxShard, "\(f.path) exceeds the shard bound")
        }
        for s in specs {
            #expect(try written.tensor(s.name).floats() == Self.rounded(try source.tensor(s.name).floats(), .BF16))
        }
        let index = try #require(
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: out.appendingPathComponent("model.safetensors.index.json"))) as? [String: Any])
        let total = (index["metadata"] as? [String: Any])?["total_size"] as? Int
        #expect(total == written.totalBytes)
        #expect((index["weight_map"] as? [String: String])?.count == specs.count)
        let config = try #require(try written.config())
        #expect(config["torch_dtype"] as? String == "bfloat16")
        #expect(config["hidden_size"] as? Int == 16)
        #expect(hiddenEntries(dir).isEmpty)
    }

    @Test("Support files and the sentence-transformers module folders listed in modules.json are copied")
    func supportFolders() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let src = dir.appendingPathComponent("src")
        try FileManager.default.createDirectory(
            at: src.appendingPathComponent("1_Pooling"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: src.appendingPathComponent("unlisted"), withIntermediateDirectories: true)
        try Data(#"[{"path": ""}, {"path": "1_Pooling"}, {"path": "../escape"}, {"path": "2_Missing"}]"#.utf8)
            .write(to: src.appendingPathComponent("modules.json"))
        try Data(#"{"pooling_mode_mean_tokens": true}"#.utf8).write(
            to: src.appendingPathComponent("1_Pooling/config.json"))
        try Data("[PAD]\n".utf8).write(to: src.appendingPathComponent("vocab.txt"))
        let w0 = try SafeTensorsWriter(
            path: src.appendingPathComponent("model.safetensors").path,
            tensors: [TensorSpec(name: "x", dtype: .F32, shape: [1])])
        try w0.write("x", floats: [1])
        try w0.finish()
        let source = try ModelFolder(path: src.path)
        #expect(source.supportFolders.map(\.lastPathComponent) == ["1_Pooling"])
        let out = dir.appendingPathComponent("out")
        let w = try ModelWriter(directory: out.path, tensors: [TensorSpec(name: "x", dtype: .F16, shape: [1])])
        try w.copySupportFiles(from: source, dtype: .F16)
        try w.write("x", floats: [1])
        try w.finish()
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("1_Pooling/config.json").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("vocab.txt").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("modules.json").path))
        #expect(!FileManager.default.fileExists(atPath: out.appendingPathComponent("unlisted").path))
    }

    @Test("One shard is named model.safetensors without an index; a tensor bigger than the bound gets its own shard")
    func shardNaming() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let small = try ModelWriter(
            directory: dir.appendingPathComponent("a").path, tensors: [TensorSpec(name: "x", dtype: .F32, shape: [4])])
        #expect(small.shardNames == ["model.safetensors"])
        try small.write("x", floats: [1, 2, 3, 4])
        try small.finish()
        #expect(
            !FileManager.default.fileExists(atPath: dir.appendingPathComponent("a/model.safetensors.index.json").path))
        #expect(try ModelFolder(path: dir.appendingPathComponent("a").path).tensor("x").floats() == [1, 2, 3, 4])

        let specs = [
            TensorSpec(name: "s1", dtype: .F32, shape: [2]), TensorSpec(name: "big", dtype: .F32, shape: [100]),
            TensorSpec(name: "s2", dtype: .F32, shape: [2]),
        ]
        let w = try ModelWriter(directory: dir.appendingPathComponent("b").path, tensors: specs, maxShardBytes: 64)
        #expect(
            w.shardNames == [
                "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors",
            ])
        for s in specs { try w.write(s.name, floats: [Float](repeating: 1, count: s.elementCount)) }
        try w.finish()
        let m = try ModelFolder(path: dir.appendingPathComponent("b").path)
        #expect(m.files.map { $0.tensors.map(\.name) } == [["s1"], ["big"], ["s2"]])
    }

    @Test("An abandoned or failed ModelWriter leaves no model at the target; an existing target needs overwrite")
    func atomicFolder() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let target = dir.appendingPathComponent("out")
        let specs = [TensorSpec(name: "a", dtype: .F16, shape: [2]), TensorSpec(name: "b", dtype: .F16, shape: [2])]
        do {
            let w = try ModelWriter(directory: target.path, tensors: specs, maxShardBytes: 4)
            try w.write("a", floats: [1, 2])
            try w.write("b", floats: [3, 4])  // both shards written, never finished
        }
        #expect(!FileManager.default.fileExists(atPath: target.path))
        #expect(hiddenEntries(dir).isEmpty, "temporary folder removed")

        let w = try ModelWriter(directory: target.path, tensors: specs)
        try w.write("a", floats: [1, 2])
        #expect(checkpointError { try w.finish() }?.code == .writeOrder)
        try w.write("b", floats: [3, 4])
        try w.finish()
        let exists = checkpointError { _ = try ModelWriter(directory: target.path, tensors: specs) }
        #expect(exists?.code == .outputExists)
        #expect(exists?.message.contains(target.path) == true)

        let dup = checkpointError {
            _ = try ModelWriter(directory: dir.appendingPathComponent("dup").path, tensors: specs + specs)
        }
        #expect(dup?.code == .duplicateTensor)
        #expect(hiddenEntries(dir).isEmpty, "a refused plan leaves no temporary folder")

        let replace = try ModelWriter(
            directory: target.path, tensors: [TensorSpec(name: "c", dtype: .F32, shape: [1])], overwrite: true)
        try replace.write("c", floats: [9])
        try replace.finish()
        let m = try ModelFolder(path: target.path)
        #expect(m.tensorNames == ["c"])
        #expect(hiddenEntries(dir).isEmpty, "the replaced folder is removed")
    }
}
