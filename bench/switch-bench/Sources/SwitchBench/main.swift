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

func benchSwitch(model: SwitchableModel, a: SwitchPack, b: SwitchPack, repeats: Int, params: Int) throws {
    try model.activate(a)
    var ab: [Double] = []
    var ba: [Double] = []
    for _ in 0..<repeats {
        var t = now()
        try model.activate(b)
        ab.append(now() - t)
        t = now()
        try model.activate(a)
        ba.append(now() - t)
    }
    var resets: [Double] = []
    for _ in 0..<repeats {
        try model.activate(a)
        let t = now()
        model.reset()
        resets.append(now() - t)
    }
    let ka = a.keptCount, kb = b.keptCount
    // 64-byte lines touched (16 floats per line; buffers are at least 16-byte aligned, so this is within 1 line
    // per tensor of the truth): below density 1/16 almost every entry costs its own line, read and written back.
    func lines(_ p: SwitchPack) -> Int {
        p.tensors.reduce(0) { total, t in
            var set = Set<UInt32>()
            for i in t.positive { set.insert(i >> 4) }
            for i in t.negative { set.insert(i >> 4) }
            return total + set.count
        }
    }
    let lineBytes = Double((lines(a) + lines(b)) * 128 + (ka + kb) * 8)
    // Remove A: read index + saved value, write weight (12 B/entry); add B: read index + weight, write saved + weight (16 B).
    let bytes = Double(12 * ka + 16 * kb)
    let bw = copyBandwidth()
    let rate = scatterRate(entries: min(kb, 20_000_000), span: params)
    print(
        String(
            format:
                "entries: A %d, B %d (density %.4f / %.4f); copy bandwidth %.2f GB/s; sorted-scatter rate %.1f M entries/s",
            ka, kb, Double(ka) / Double(params), Double(kb) / Double(params), bw / 1e9, rate / 1e6))
    report("switch A -> B (median)", median(ab))
    report("switch B -> A (median)", median(ba))
    report("reset A -> base (median)", median(resets))
    report("floor: entries x bytes / copy bandwidth", bytes / bw)
    report("floor: cache lines touched x 128 B (+ index, undo) / bw", lineBytes / bw)
    report("floor: (A + B entries) / sorted-scatter rate", Double(ka + kb) / rate)
    report("full rewrite of all weights (4 B x params / bw x 2)", Double(params) * 8 / bw)
    print(
        String(
            format: "  ratio switch / entries-x-bytes floor: %.2fx, / cache-line floor: %.2fx",
            median(ab) / (bytes / bw), median(ab) / (lineBytes / bw)))
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
