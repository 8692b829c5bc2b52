import CGlibcExtensions

/// glibc's allocator policy for a process that streams tensors: keep freed memory for the next tensor.
///
/// By default glibc serves each block above a dynamic threshold with a fresh `mmap` and hands freed heap tops back to
/// the kernel, so every tensor's scratch (a TIES merge's band members and histograms, a worker's blocks) is faulted
/// in again, page by page. On this project's VM a first touch costs about 1 µs per 4 KB page (fresh anonymous
/// memory fills at 0.6-2 GB/s, mapped memory at 19 GB/s): a 0.4 B-parameter TIES merge took 124 K page faults and
/// 1.16 s; with blocks up to 32 MB from the heap and no trimming, 55 K faults and 0.87 s (docs/bench-merge.md). The
/// price is a resident set that stays at its high-water mark until exit. The `tswitch` command sets it at start.
public enum MemoryPolicy {
    /// Applies the policy to the whole process (glibc only; elsewhere nothing changes). Returns whether it applied.
    @discardableResult
    public static func keepFreedHeap() -> Bool {
        tsw_keep_freed_heap(32 << 20) == 1
    }
}
