import CheckpointIO
import Foundation
import TaskSwitches

// Hot switching A -> B on a resident base, next to the memory-bandwidth floor and to loading the full fine-tune.
//
//   SwitchBench real BASE A.tsw B.tsw FINETUNE_B [--repeat N]
//   SwitchBench synthetic PARAMS DENSITY [--repeat N]      (a generated model of PARAMS floats, random masks)

func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// xorshift64*: fast deterministic draws for generated models.
struct Xorshift: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
}

func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

/// Copy bandwidth (bytes read + bytes written per second) over a 512 MB buffer, best of 5.
func copyBandwidth() -> Double {
    let n = 64 << 20
    let a = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
    let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: n)
    defer { a.deallocate(); b.deallocate() }
    a.initialize(repeating: 1)
    b.initialize(repeating: 2)
    var best = 0.0
    for _ in 0..<5 {
        let t = now()
        _ = b.update(fromContentsOf: a)
        best = max(best, Double(2 * n * 4) / (now() - t))
    }
    return best
}

/// Random 4-byte read-modify-writes per second (dependent on cache misses): the floor for sparse scatters.
func scatterRate(entries: Int, span: Int) -> Double {
    let w = UnsafeMutableBufferPointer<Float>.allocate(capacity: span)
    defer { w.deallocate() }
    w.initialize(repeating: 0)
    var g = Xorshift(state: 12345)
    let idx = (0..<entries).map { _ in UInt32.random(in: 0..<UInt32(span), using: &g) }.sorted()
    var best = 0.0
    for _ in 0..<3 {
        let t = now()
        for i in idx { w[Int(i)] += 1 }
        best = max(best, Double(entries) / (now() - t))
    }
    return best
}

func report(_ name: String, _ s: Double) { print(String(format: "  %-46@ %10.3f ms", name, s * 1000)) }

/// 64-byte lines (16 floats; buffers are at least 16-byte aligned, so within 1 line per tensor of the truth) that
/// hold a kept entry of any of `packs`, summed over tensors.
func lines(_ packs: [SwitchPack]) -> Int {
    var total = 0
    for t in packs[0].tensors.indices {
        var seen = [Bool](repeating: false, count: (packs[0].tensors[t].elementCount + 15) / 16)
        for p in packs {
            for i in p.tensors[t].positive { seen[Int(i >> 4)] = true }
            for i in p.tensors[t].negative { seen[Int(i >> 4)] = true }
        }
        total += seen.reduce(0) { $0 + ($1 ? 1 : 0) }
    }
    return total
}

func benchSwitch(model: SwitchableModel, a: SwitchPack, b: SwitchPack, repeats: Int, params: Int) throws {
    // Before (scatter per index list, the previous loop), the tiled sweep, and the per-tensor rule (after), in
    // alternating rounds so that load from other jobs falls on all three alike.
    let strategies: [(String, SwitchableModel.Strategy)] = [
        ("scatter (before)", .scatter), ("sweep", .sweep), ("automatic rule (after)", .automatic),
    ]
    var ab = [[Double]](repeating: [], count: strategies.count)
    var ba = ab
    var resets = ab
    for _ in 0..<repeats {
        for (k, (_, s)) in strategies.enumerated() {
            try model.activate(a, strategy: s)
            var t = now()
            try model.activate(b, strategy: s)
            ab[k].append(now() - t)
            t = now()
            try model.activate(a, strategy: s)
            ba[k].append(now() - t)
            t = now()
            model.reset(strategy: s)
            resets[k].append(now() - t)
        }
    }
    let ka = a.keptCount, kb = b.keptCount
    let (la, lb, lab) = (lines([a]), lines([b]), lines([a, b]))
    // Scatter: A's lines then B's lines, each read and written (128 B), + 8 B per entry (index + saved value).
    let lineBytes = Double((la + lb) * 128 + (ka + kb) * 8)
    // Sweep: every line of A or B once.
    let unionBytes = Double(lab * 128 + (ka + kb) * 8)
    // Remove A: read index + saved value, write weight (12 B/entry); add B: read index + weight, write saved + weight (16 B).
    let bytes = Double(12 * ka + 16 * kb)
    let bw = copyBandwidth()
    let rate = scatterRate(entries: min(kb, 20_000_000), span: params)
    print(
        String(
            format:
                "entries: A %d, B %d (density %.4f / %.4f); lines touched A %.1f %%, B %.1f %%, A or B %.1f %%; copy bandwidth %.2f GB/s; sorted-scatter rate %.1f M entries/s",
            ka, kb, Double(ka) / Double(params), Double(kb) / Double(params), 1600 * Double(la) / Double(params),
            1600 * Double(lb) / Double(params), 1600 * Double(lab) / Double(params), bw / 1e9, rate / 1e6))
    for (k, (name, _)) in strategies.enumerated() {
        report("switch A -> B, \(name)", median(ab[k]))
        report("switch B -> A, \(name)", median(ba[k]))
        report("reset A -> base, \(name)", median(resets[k]))
    }
    report("floor: entries x bytes / copy bandwidth", bytes / bw)
    report("floor: lines of A + lines of B x 128 B (+ 8 B/entry) / bw", lineBytes / bw)
    report("floor: lines of A or B x 128 B (+ 8 B/entry) / bw", unionBytes / bw)
    report("floor: (A + B entries) / sorted-scatter rate", Double(ka + kb) / rate)
    report("full rewrite of all weights (4 B x params / bw x 2)", Double(params) * 8 / bw)
    let after = median(ab[2])
    print(
        String(
            format: "  after: %.2fx the entries-x-bytes floor, %.2fx the one-pass cache-line floor; before/after %.2fx",
            after / (bytes / bw), after / (unionBytes / bw), median(ab[0]) / after))
}

let args = CommandLine.arguments
var repeats = 11
if let r = args.firstIndex(of: "--repeat"), r + 1 < args.count, let n = Int(args[r + 1]) { repeats = n }

if args.count >= 6 && args[1] == "real" {
    let base = try ModelFolder(path: args[2])
    var t = now()
    let pa = try PackFile.read(args[3])
    let pb = try PackFile.read(args[4])
    let decode = (now() - t) / 2
    t = now()
    let model = try SwitchableModel(base: base)
    let loadBase = now() - t
    print("base \(args[2]): \(model.specs.count) tensors, \(base.parameterCount) parameters")
    report("load base into memory (once)", loadBase)
    report("read + decode one pack (mean of A, B)", decode)
    try benchSwitch(model: model, a: pa, b: pb, repeats: repeats, params: base.parameterCount)
    // The alternative: load the full fine-tune B from disk (page cache warm) into Float buffers.
    var loads: [Double] = []
    for _ in 0..<3 {
        t = now()
        let ft = try ModelFolder(path: args[5])
        var sink: Float = 0
        for info in ft.tensorInfos where info.dtype.isConvertibleFloat {
            let v = try ft.tensor(info.name).floats()
            sink += v[0]
        }
        loads.append(now() - t)
        if sink.isNaN { print("") }
    }
    report("load full fine-tune B from disk (warm cache)", median(loads))
} else if args.count >= 4 && args[1] == "synthetic" {
    guard let params = Int(args[2]), let density = Double(args[3]) else { fatalError("usage") }
    // A 1B-class layout: square matrices of 4096 x 4096 (16.8M) plus a remainder tensor.
    let per = 4096 * 4096
    var tensors: [(spec: TensorSpec, values: [Float])] = []
    var left = params
    var k = 0
    var g = Xorshift(state: 0x9E37_79B9_7F4A_7C15)  // SystemRandomNumberGenerator is a syscall per draw
    var t = now()
    while left > 0 {
        let n = min(per, left)
        let shape = n == per ? [4096, 4096] : [n]
        tensors.append(
            (
                TensorSpec(name: "layer.\(k).weight", dtype: .F32, shape: shape),
                (0..<n).map { _ in Float.random(in: -0.05...0.05, using: &g) }
            ))
        left -= n
        k += 1
    }
    let fp = BaseFingerprint(value: 42)
    let model = SwitchableModel(tensors: tensors, fingerprint: fp)
    tensors = []
    print(String(format: "generated %d parameters in %d tensors (%.1f s)", params, k, now() - t))
    func randomPack(_ name: String, seed: UInt64) -> SwitchPack {
        var sws: [TensorSwitch] = []
        for s in model.specs {
            var pos: [UInt32] = []
            var neg: [UInt32] = []
            let n = s.elementCount
            let step = 1.0 / density
            var x = Double.random(in: 0..<step, using: &g)
            while Int(x) < n {
                if Bool.random(using: &g) { pos.append(UInt32(Int(x))) } else { neg.append(UInt32(Int(x))) }
                x += Double.random(in: 0.5..<1.5, using: &g) * step
            }
            sws.append(
                TensorSwitch(name: s.name, shape: s.shape, baseDType: .F32, lambda: 0.001, positive: pos, negative: neg)
            )
        }
        return SwitchPack(task: name, baseFingerprint: fp, dropRatio: 1 - density, tieRule: .lowestIndex, tensors: sws)
    }
    t = now()
    let a = randomPack("A", seed: 1)
    let b = randomPack("B", seed: 2)
    print(String(format: "packs generated (%.1f s)", now() - t))
    try benchSwitch(model: model, a: a, b: b, repeats: max(3, repeats / 2), params: params)
    // Reading a full F32 fine-tune of this size from disk, at the measured bandwidth of a warm page cache, is at
    // least 4 B x params / copy bandwidth; from NVMe (~3 GB/s) it is 4 B x params / 3e9.
    report("floor to load a full F32 fine-tune (NVMe 3 GB/s)", Double(params) * 4 / 3e9)
} else {
    print("usage: SwitchBench real BASE A.tsw B.tsw FINETUNE_B [--repeat N] | synthetic PARAMS DENSITY [--repeat N]")
    exit(2)
}
