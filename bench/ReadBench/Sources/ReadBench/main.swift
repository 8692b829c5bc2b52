import CheckpointIO
import Foundation

/// read-bench MODEL [PASSES]: opens MODEL, then converts every tensor to f32 into a reused buffer, releasing each
/// tensor's pages after use, PASSES times (plus one warm-up pass). Prints one JSON line with the best pass.
let args = CommandLine.arguments
guard args.count >= 2 else {
    FileHandle.standardError.write(Data("usage: read-bench MODEL [PASSES]\n".utf8))
    exit(2)
}
let passes = args.count > 2 ? Int(args[2]) ?? 3 : 3

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

do {
    let t0 = now()
    let model = try ModelFolder(path: args[1])
    let openSeconds = now() - t0
    let infos = model.tensorInfos
    let largest = infos.map(\.elementCount).max() ?? 0
    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: largest)
    buffer.initialize(repeating: 0)  // fault the destination in once, as a long-running consumer would have
    var checksum: Float = 0
    var times: [Double] = []
    for pass in 0...passes {
        let start = now()
        for t in infos {
            let view = try model.tensor(t.name)
            let dst = UnsafeMutableBufferPointer(rebasing: buffer[0..<t.elementCount])
            try view.copyFloats(into: dst)
            if t.elementCount > 0 { checksum += dst[t.elementCount / 2] }
            view.release()
        }
        if pass > 0 { times.append(now() - start) }
    }
    let bytes = model.totalBytes
    let best = times.min() ?? .nan
    print(String(format: "{\"bytes\": %d, \"params\": %d, \"open_s\": %.6f, \"best_s\": %.4f, \"median_s\": %.4f, \"gbps_in\": %.3f, \"threads\": %d, \"checksum\": %.6g}",
                 bytes, model.parameterCount, openSeconds, best, times.sorted()[times.count / 2],
                 Double(bytes) / best / 1e9, Parallel.coreCount, checksum))
} catch {
    FileHandle.standardError.write(Data("read-bench: \(error)\n".utf8))
    exit(1)
}
