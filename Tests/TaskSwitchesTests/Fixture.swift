import CheckpointIO
import Foundation
import TensorKernels
import TestSupport
import Testing

@testable import TaskSwitches

/// Fixture paths and tiny models built in code for the TaskSwitches tests.
enum Fixture {
    static let root = TestPaths.fixtures(in: .module)

    static func url(_ relative: String) -> URL { root.appendingPathComponent(relative) }

    static func floats(_ relative: String) throws -> [Float] {
        let data = try Data(contentsOf: url(relative))
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map {
                Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self)))
            }
        }
    }
}

/// FNV-1a 64 over the little-endian bytes of UInt32 indices, as the reference script hashes them.
func indexHash(_ indices: [UInt32]) -> String {
    var h = FNV1a64()
    for i in indices { withUnsafeBytes(of: i.littleEndian) { h.add($0) } }
    return BaseFingerprint(value: h.value).description
}

/// Test helpers on the shared deterministic generator, so random test models are reproducible.
extension SplitMix64 {
    /// Roughly normal (sum of uniforms), cheap and deterministic.
    mutating func normal() -> Float {
        var s: Float = 0
        for _ in 0..<4 { s += Float.random(in: -1...1, using: &self) }
        return s * 0.866
    }
}

/// A small model folder written with `ModelWriter`: tensors (name, shape, values) in the given dtype.
func writeModel(
    _ dir: URL, _ tensors: [(String, [Int], [Float])], dtype: DType = .F32,
    extra: [(String, DType, [Int], [UInt8])] = []
)
    throws
{
    var specs = tensors.map { TensorSpec(name: $0.0, dtype: dtype, shape: $0.1) }
    specs += extra.map { TensorSpec(name: $0.0, dtype: $0.1, shape: $0.2) }
    let w = try ModelWriter(directory: dir.path, tensors: specs, overwrite: true)
    for t in tensors { try w.write(t.0, floats: t.2) }
    for e in extra {
        var failure: CheckpointError?
        e.3.withUnsafeBytes { b in
            do throws(CheckpointError) { try w.write(e.0, bytes: b) } catch { failure = error }
        }
        if let failure { throw failure }
    }
    try w.addFile("config.json", contents: Data(#"{"model_type": "bert", "torch_dtype": "float32"}"#.utf8))
    try w.finish()
}

/// A base and a fine-tune of a toy architecture: two matrices, a bias, a scalar and an int tensor.
func toyPair(_ dir: URL, seed: UInt64 = 1, scale: Float = 0.01) throws -> (base: URL, fine: URL) {
    var g = SplitMix64(seed: seed)
    let shapes: [(String, [Int])] = [
        ("layer.0.weight", [48, 32]), ("layer.0.bias", [48]), ("layer.1.weight", [16, 48]), ("temperature", []),
    ]
    var base: [(String, [Int], [Float])] = []
    var fine: [(String, [Int], [Float])] = []
    for (name, shape) in shapes {
        let n = shape.reduce(1, *)
        let b = (0..<n).map { _ in g.normal() }
        let f = b.map { $0 + scale * g.normal() }
        base.append((name, shape, b))
        fine.append((name, shape, f))
    }
    let ids: [UInt8] = (0..<8).flatMap { i in withUnsafeBytes(of: Int64(i).littleEndian, Array.init) }
    let b = dir.appendingPathComponent("base")
    let f = dir.appendingPathComponent("fine")
    try writeModel(b, base, extra: [("position_ids", .I64, [8], ids)])
    try writeModel(f, fine, extra: [("position_ids", .I64, [8], ids)])
    return (b, f)
}

/// Runs `body` and returns the `SwitchError` it throws, or nil.
func switchError(
    _ body: () throws(SwitchError) -> Void, sourceLocation: SourceLocation = #_sourceLocation
) -> SwitchError? {
    thrownError(SwitchError.self, sourceLocation: sourceLocation, body)
}
