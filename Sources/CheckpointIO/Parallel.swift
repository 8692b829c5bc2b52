import Dispatch

/// Splits index ranges across cores.
public enum Parallel {
    /// Cores to use; `TSWITCH_THREADS` overrides (1 makes every loop serial, for profiling).
    public static let coreCount: Int = {
        if let s = getenvString("TSWITCH_THREADS"), let n = Int(s), n > 0 { return n }
        return max(1, sysconfCores())
    }()

    /// Calls `body` on disjoint chunks covering `0..<count`, in parallel when the work is large enough.
    ///
    /// - Parameters:
    ///   - minChunk: the smallest range worth a thread; below `2 × minChunk` everything runs on the caller.
    public static func forEachChunk(
        _ count: Int, minChunk: Int = 1 << 16, _ body: (Range<Int>) -> Void
    ) {
        let chunks = min(coreCount * 4, count / max(1, minChunk))
        if chunks <= 1 || coreCount == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let per = (count + chunks - 1) / chunks
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: chunks) { i in
                let lo = i * per
                let hi = min(count, lo + per)
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }
}

/// Carries a value into `concurrentPerform`. Callers guarantee that concurrent uses touch disjoint memory.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

#if canImport(Glibc)
    @preconcurrency import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

private func getenvString(_ name: String) -> String? {
    guard let p = getenv(name) else { return nil }
    return String(cString: p)
}

private func sysconfCores() -> Int { Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) }
