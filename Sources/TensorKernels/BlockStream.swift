import CheckpointIO

/// A tensor's elements in their stored dtype (F32, F16, BF16, F64), read block by block as `Float` without
/// materialising the whole tensor in f32: streamed merges read each input straight from its memory mapping.
public struct TensorSource: @unchecked Sendable {
    // Read-only bytes that outlive every use (a mapping held by the caller, or a caller-owned buffer).
    public let bytes: UnsafeRawBufferPointer
    public let dtype: DType
    public let count: Int

    public init(bytes: UnsafeRawBufferPointer, dtype: DType, count: Int) {
        precondition(dtype.isConvertibleFloat && bytes.count == count * dtype.bitWidth / 8, "source size mismatch")
        self.bytes = bytes
        self.dtype = dtype
        self.count = count
    }

    /// A source over `Float` values (tests and the whole-tensor path).
    public init(_ floats: UnsafeBufferPointer<Float>) {
        self.init(bytes: UnsafeRawBufferPointer(floats), dtype: .F32, count: floats.count)
    }

    /// Converts elements `range` into `destination[0..<range.count]` on the calling thread.
    @inline(__always)
    public func read(_ range: Range<Int>, into destination: UnsafeMutablePointer<Float>) {
        let w = dtype.bitWidth / 8
        if let base = bytes.baseAddress, Int(bitPattern: base) % w == 0 {
            switch dtype {
            case .BF16:
                let p = (base + range.lowerBound * 2).assumingMemoryBound(to: UInt16.self)
                DTypeConversion.widenBF16(p, destination, count: range.count)
                return
            case .F32:
                destination.update(
                    from: (base + range.lowerBound * 4).assumingMemoryBound(to: Float.self), count: range.count)
                return
            default: break
            }
        }
        let src = UnsafeRawBufferPointer(rebasing: bytes[(range.lowerBound * w)..<(range.upperBound * w)])
        // Blocks are below DTypeConversion's parallel threshold, so this runs on the caller.
        DTypeConversion.toFloat(
            src, dtype: dtype, into: UnsafeMutableBufferPointer(start: destination, count: range.count))
    }
}

/// The output tensor's bytes in its stored dtype, written block by block from `Float`.
public struct TensorSink: @unchecked Sendable {
    // Disjoint ranges are written by different threads.
    public let bytes: UnsafeMutableRawBufferPointer
    public let dtype: DType
    public let count: Int

    public init(bytes: UnsafeMutableRawBufferPointer, dtype: DType, count: Int) {
        precondition(dtype.isConvertibleFloat && bytes.count == count * dtype.bitWidth / 8, "sink size mismatch")
        self.bytes = bytes
        self.dtype = dtype
        self.count = count
    }

    public init(_ floats: UnsafeMutableBufferPointer<Float>) {
        self.init(bytes: UnsafeMutableRawBufferPointer(floats), dtype: .F32, count: floats.count)
    }

    /// Narrows `values[0..<range.count]` into elements `range`.
    @inline(__always)
    public func write(_ range: Range<Int>, from values: UnsafePointer<Float>) {
        let w = dtype.bitWidth / 8
        if let base = bytes.baseAddress, Int(bitPattern: base) % w == 0 {
            switch dtype {
            case .BF16:
                let p = (base + range.lowerBound * 2).assumingMemoryBound(to: UInt16.self)
                DTypeConversion.narrowBF16(values, p, count: range.count)
                return
            case .F32:
                (base + range.lowerBound * 4).assumingMemoryBound(to: Float.self).update(
                    from: values, count: range.count)
                return
            default: break
            }
        }
        let dst = UnsafeMutableRawBufferPointer(rebasing: bytes[(range.lowerBound * w)..<(range.upperBound * w)])
        DTypeConversion.fromFloat(UnsafeBufferPointer(start: values, count: range.count), to: dtype, into: dst)
    }
}

/// Runs a body over fixed-size blocks of a tensor on all cores, handing it the blocks of every source already
/// converted to `Float` in per-thread scratch.
///
/// Blocks are `blockSize` elements (16 K: 64 KB per source stays in L2 next to the output block); block `b`
/// covers `b*blockSize ..< min(count, (b+1)*blockSize)`, the same on every pass, so passes can carry per-block
/// state (e.g. counts of ties) from one to the next.
public enum BlockStream {
    public static let blockSize = 1 << 14

    /// Number of blocks of a tensor of `count` elements.
    public static func blockCount(_ count: Int) -> Int { (count + blockSize - 1) / blockSize }

    /// Calls `body(worker, blockIndex, range, blocks)` for every block; `worker` in `0..<workers` identifies the
    /// calling chunk so bodies can accumulate into per-worker slots without locks. Returns the worker count.
    ///
    /// - Parameters:
    ///   - extra: additional scratch `Float` blocks per worker (e.g. for the output block), appended after the
    ///     sources' blocks.
    @discardableResult
    public static func run(
        count: Int, sources: [TensorSource], extra: Int = 0,
        _ body: (_ worker: Int, _ block: Int, _ range: Range<Int>, _ blocks: [UnsafeMutablePointer<Float>]) -> Void
    ) -> Int {
        let blocks = blockCount(count)
        guard blocks > 0 else { return 0 }
        let workers = min(blocks, Parallel.coreCount * 2)
        let per = (blocks + workers - 1) / workers
        let slots = sources.count + extra
        withoutActuallyEscaping(body) { body in
            let b = UncheckedSendable(body)
            Parallel.forEachChunk(workers, minChunk: 1) { wr in
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: max(1, slots) * blockSize)
                defer { scratch.deallocate() }
                let ptrs = (0..<slots).map { scratch + $0 * blockSize }
                for w in wr {
                    let lo = w * per
                    let hi = min(blocks, lo + per)
                    guard lo < hi else { continue }
                    for blk in lo..<hi {
                        let r = (blk * blockSize)..<min(count, (blk + 1) * blockSize)
                        for (s, src) in sources.enumerated() { src.read(r, into: ptrs[s]) }
                        b.value(w, blk, r, ptrs)
                    }
                }
            }
        }
        return workers
    }

    /// The number of workers `run` uses for `count` elements (size per-worker accumulators with it).
    public static func workerCount(_ count: Int) -> Int { min(blockCount(count), Parallel.coreCount * 2) }
}
