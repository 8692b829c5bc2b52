// Mixed-task batches against the base and against regrouping (issue 13), in one process, one run:
//   (a) the base model; (b) one pack switched in place per batch; (c) the 8 tasks mixed, one hard switch per
//   example; (d) soft per-example mixes (Auto-Switch, 10 neighbours); (e) 32 distinct packs in one batch;
// each of (c)-(e) in the tile-fused layout (the default), the earlier per-group layer layout (mixed-layer) and
// by regrouping (the batch split by mix, the whole model switched per group: the peer).
// Two workloads: batches of --batch texts of exactly --seq-len tokens, and the real task texts.
// Configurations alternate within each repetition; medians of --repeat runs. Also prints the bytes of weights and
// packs a batch touches and the memory-bandwidth floor they imply (a copy measured in the same run).
//
// Usage: swift run -c release --package-path bench/mixed-bench MixedBench [--batch 32] [--seq-len 128]
//        [--batches 8] [--repeat 5] [--real-texts 256] [--only NAME;NAME…] [--workload fixed|real]
import CheckpointIO
import Evaluation
import Foundation
import TaskSwitches
import TensorKernels

let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
func option(_ name: String, _ fallback: Int) -> Int {
    let a = CommandLine.arguments
    guard let i = a.firstIndex(of: name), i + 1 < a.count, let v = Int(a[i + 1]) else { return fallback }
    return v
}
let batch = option("--batch", 32)
let seqLen = option("--seq-len", 128)
let batchesPerRun = option("--batches", 8)
let repeats = option("--repeat", 5)
let realCount = option("--real-texts", 256)
let tasks = ["code-lang", "deb-section", "fortune", "lang-id", "man-section", "unicode-cat", "wn-noun", "wn-verb"]

func modelPath() throws -> String {
    let p = Process()
    p.executableURL = root.appendingPathComponent("scripts/model-path")
    let pipe = Pipe()
    p.standardOutput = pipe
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}
func log(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

let basePath = try modelPath()
let switched = try SwitchedEncoder(basePath: basePath)
let packs8 = try tasks.map { try PackFile.read(root.appendingPathComponent("packs/\($0).tsw").path) }

// 24 more T-Switch packs at the same drop ratio (0.7): each from the task vector of a weighted pair of the shipped
// packs (applied, then P-Discarded again), so every one has its own mask, signs and scale. Cached in /tmp.
let cache = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("taskswitch-mixed-bench-packs")
try FileManager.default.createDirectory(at: cache, withIntermediateDirectories: true)
let baseFolder = try ModelFolder(path: basePath)
var extra: [SwitchPack] = []
for k in 0..<24 {
    let file = cache.appendingPathComponent("extra-\(k).tsw").path
    if let p = try? PackFile.read(file), p.baseFingerprint == switched.model.fingerprint {
        extra.append(p)
        continue
    }
    log("building extra pack \(k + 1)/24")
    let i = k % 8
    let j = (k / 8 + 1 + i) % 8
    let model = cache.appendingPathComponent("model-\(k)")
    try? FileManager.default.removeItem(at: model)
    try SwitchApplier.write(base: baseFolder, packs: [(packs8[i], 1), (packs8[j], 0.5 + Float(k / 8) * 0.25)], output: model.path)
    for f in baseFolder.supportFiles {
        try? FileManager.default.copyItem(at: f, to: model.appendingPathComponent(f.lastPathComponent))
    }
    let p = try SwitchPack.build(base: baseFolder, fineTuned: try ModelFolder(path: model.path), dropRatio: 0.7, task: "extra-\(k)")
    _ = try PackFile.write(p, to: file, overwrite: true)
    try? FileManager.default.removeItem(at: model)
    extra.append(p)
}
let packs32 = packs8 + extra

// Workloads.
let words = "the of and to in is was for on that with as by at from his it an were are which".split(separator: " ")
let fixedTexts = (0..<(batch * batchesPerRun)).map { i in
    (0..<(seqLen - 2)).map { String(words[(i + $0) % words.count]) }.joined(separator: " ")
}
var realTexts: [String] = []
for t in tasks {
    let rows = try TextDataset.read(path: root.appendingPathComponent("data/tasks/\(t)/test.jsonl").path)
    realTexts += rows.prefix(realCount / tasks.count).map(\.text)
}
// Interleave the tasks so every batch mixes them (as traffic does).
let per = realTexts.count / tasks.count
realTexts = (0..<per).flatMap { i in (0..<tasks.count).map { realTexts[$0 * per + i] } }

// Soft mixes from Auto-Switch (10 neighbours) on each workload's own base features.
let query = try QuerySet(path: root.appendingPathComponent("packs/queries.safetensors").path, requireLabels: true)
let router = try AutoSwitchRouter(query: query, k: 10)
func softMixes(_ texts: [String]) throws -> [[Double]] {
    let f = try switched.embed(texts, packs: [], maxLength: seqLen, batchSize: batch)
    let shares = try router.weights(
        QuerySet(features: f, count: texts.count, dimension: 384, labels: nil, tasks: []), mode: .perExample,
        batchSize: 1)
    return shares.map { row in
        var w = [Double](repeating: 0, count: packs8.count)
        for (k, s) in row.enumerated() { w[packs8.firstIndex { $0.task == query.tasks[k] }!] += s }
        return w
    }
}

struct Config {
    let name: String
    let run: ([String]) throws -> Void
}
func oneHot(_ i: Int, _ n: Int) -> [Double] { (0..<n).map { $0 == i ? 1 : 0 } }
/// The peer: the batch split by mix, the whole model switched in place per group (`MixedBatching.regroup`).
func regroup(_ texts: [String], _ packs: [SwitchPack], _ mixes: [[Double]]) throws {
    _ = try switched.embed(texts, packs: packs, mixes: mixes, maxLength: seqLen, batchSize: batch, batching: .regroup)
}

func configs(soft: [[Double]]) -> [Config] {
    // Per batch b: mixes of its texts.
    func perBatch(_ texts: [String], _ body: ([String], Range<Int>) throws -> Void) throws {
        var s = 0
        while s < texts.count {
            let r = s..<min(texts.count, s + batch)
            try body(Array(texts[r]), r)
            s = r.upperBound
        }
    }
    let hard8 = { (r: Range<Int>) in r.map { oneHot($0 % 8, 8) } }
    let hard32 = { (r: Range<Int>) in r.map { oneHot($0 % 32, 32) } }
    return [
        Config(name: "(a) base") { t in
            try perBatch(t) { b, _ in _ = try switched.withEncoder([]) { $0.embed(b, maxLength: seqLen, batchSize: batch) } }
        },
        Config(name: "(b) one pack in place") { t in
            try perBatch(t) { b, _ in _ = try switched.withEncoder([(packs8[0], 1)]) { $0.embed(b, maxLength: seqLen, batchSize: batch) } }
        },
        Config(name: "(c) 8 tasks, hard, mixed (tile-fused)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs8, mixes: hard8(r), maxLength: seqLen, batchSize: batch) }
        },
        Config(name: "(c) 8 tasks, hard, mixed-layer (old)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs8, mixes: hard8(r), maxLength: seqLen, batchSize: batch, batching: .mixedLayer) }
        },
        Config(name: "(c) 8 tasks, hard, regroup") { t in try perBatch(t) { b, r in try regroup(b, packs8, hard8(r)) } },
        Config(name: "(d) soft k=10, mixed (tile-fused)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs8, mixes: Array(soft[r]), maxLength: seqLen, batchSize: batch) }
        },
        Config(name: "(d) soft k=10, mixed-layer (old)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs8, mixes: Array(soft[r]), maxLength: seqLen, batchSize: batch, batching: .mixedLayer) }
        },
        Config(name: "(d) soft k=10, regroup") { t in try perBatch(t) { b, r in try regroup(b, packs8, Array(soft[r])) } },
        Config(name: "(e) 32 packs, mixed (tile-fused)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs32, mixes: hard32(r), maxLength: seqLen, batchSize: batch) }
        },
        Config(name: "(e) 32 packs, mixed-layer (old)") { t in
            try perBatch(t) { b, r in _ = try switched.embed(b, packs: packs32, mixes: hard32(r), maxLength: seqLen, batchSize: batch, batching: .mixedLayer) }
        },
        Config(name: "(e) 32 packs, regroup") { t in try perBatch(t) { b, r in try regroup(b, packs32, hard32(r)) } },
    ]
}

/// Copy bandwidth measured here: 2 × bytes / time of a 256 MB copy (median of 5).
func bandwidth() -> Double {
    let n = 1 << 26
    let src = [Float](repeating: 1, count: n)
    var dst = [Float](repeating: 0, count: n)
    var times: [Double] = []
    for _ in 0..<5 {
        let s = Date()
        src.withUnsafeBufferPointer { sp in dst.withUnsafeMutableBufferPointer { _ = $0.update(fromContentsOf: sp) } }
        times.append(Date().timeIntervalSince(s))
    }
    return 2 * Double(n * 4) / times.sorted()[2]
}

/// Bytes a mixed batch moves for its weights: per group and layer, a switched layer is read from the base, written
/// to scratch, its pack entries read (4-byte indices, + 4-byte values for random masks), and the product reads
/// the scratch; an unswitched group's product reads the base layer. Embedding rows and activations are left out.
func mixedBytes(_ packs: [SwitchPack], groups: [[Int]]) -> Double {
    let layerTensors = switched.model.specs.filter { $0.name.contains("encoder.layer.") }
    let layerBytes = Double(layerTensors.reduce(0) { $0 + $1.elementCount } * 4)
    var total = 0.0
    for g in groups {
        if g.isEmpty { total += layerBytes; continue }
        let kept = g.reduce(0) { acc, p in
            acc + packs[p].tensors.filter { $0.name.contains("encoder.layer.") }.reduce(0) { $0 + $1.keptCount }
        }
        total += 3 * layerBytes + Double(kept * 4)
    }
    return total
}

/// Bytes the tile-fused layout moves from memory: the base layers once, and every group's pack entries (its
/// switched tiles stay in L2, and activations are left out as above).
func fusedBytes(_ packs: [SwitchPack], groups: [[Int]]) -> Double {
    let layerTensors = switched.model.specs.filter { $0.name.contains("encoder.layer.") }
    var total = Double(layerTensors.reduce(0) { $0 + $1.elementCount } * 4)
    for g in groups {
        total += Double(g.reduce(0) { acc, p in
            acc + packs[p].tensors.filter { $0.name.contains("encoder.layer.") }.reduce(0) { $0 + $1.keptCount }
        } * 4)
    }
    return total
}

log("measuring copy bandwidth")
let bw = bandwidth()
let load = { () -> Double in
    var l = [Double](repeating: 0, count: 3)
    getloadavg(&l, 3)
    return l[0]
}
print("mixed-bench: batch \(batch), \(seqLen)-token texts (\(fixedTexts.count)) and \(realTexts.count) real task texts (max 128 tokens); \(repeats) runs, medians; copy bandwidth \(String(format: "%.1f", bw / 1e9)) GB/s; load before \(String(format: "%.2f", load()))")
let workloadOption = CommandLine.arguments.firstIndex(of: "--workload").map { CommandLine.arguments[$0 + 1] }
for (workload, texts) in [("fixed \(seqLen) tokens", fixedTexts), ("real task texts", realTexts)]
where workloadOption.map({ workload.hasPrefix($0) }) ?? true {
    let soft = try softMixes(texts)
    // --only a;b;…: just the configurations whose names contain one of the strings, (a) always kept (for tuning).
    let only = CommandLine.arguments.firstIndex(of: "--only").map { CommandLine.arguments[$0 + 1].split(separator: ";").map(String.init) }
    let cs = configs(soft: soft).enumerated().filter { k, c in k == 0 || only.map { o in o.contains { c.name.contains($0) } } ?? true }.map(\.element)
    for c in cs { try c.run(Array(texts.prefix(batch))) }  // warm-up
    var times = [[Double]](repeating: [], count: cs.count)
    for r in 0..<repeats {
        for (k, c) in cs.enumerated() {
            let s = Date()
            try c.run(texts)
            times[k].append(Date().timeIntervalSince(s))
        }
        log("\(workload): run \(r + 1)/\(repeats) done")
    }
    let med = times.map { $0.sorted()[$0.count / 2] }
    let rate = med.map { Double(texts.count) / $0 }
    print("\n\(workload):")
    print("| configuration | sentences/s | × (a) | ms per batch |")
    print("|---|---|---|---|")
    for (k, c) in cs.enumerated() {
        let batches = Double((texts.count + batch - 1) / batch)
        print("| \(c.name) | \(String(format: "%.1f", rate[k])) | \(String(format: "%.2f", rate[k] / rate[0])) | \(String(format: "%.1f", med[k] / batches * 1000)) |")
    }
    // Bytes per batch of the mixed configurations against the bandwidth floor.
    let b8 = mixedBytes(packs8, groups: (0..<8).map { [$0] })
    let b32 = mixedBytes(packs32, groups: (0..<min(32, batch)).map { [$0] })
    let bA = mixedBytes(packs8, groups: [[]])
    let f8 = fusedBytes(packs8, groups: (0..<8).map { [$0] })
    let f32 = fusedBytes(packs32, groups: (0..<min(32, batch)).map { [$0] })
    print("tile-fused, from memory per batch: (c) \(String(format: "%.0f", f8 / 1e6)) MB → floor \(String(format: "%.1f", f8 / bw * 1000)) ms; (e) \(String(format: "%.0f", f32 / 1e6)) MB → \(String(format: "%.1f", f32 / bw * 1000)) ms")
    print("weights and packs touched per batch: (a) \(String(format: "%.0f", bA / 1e6)) MB → floor \(String(format: "%.1f", bA / bw * 1000)) ms; (c) \(String(format: "%.0f", b8 / 1e6)) MB → \(String(format: "%.1f", b8 / bw * 1000)) ms; (e) \(String(format: "%.0f", b32 / 1e6)) MB → \(String(format: "%.1f", b32 / bw * 1000)) ms")
}
print("load after \(String(format: "%.2f", load()))")
