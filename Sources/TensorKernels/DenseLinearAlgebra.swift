import COpenBLAS

/// Double-precision dense linear algebra through OpenBLAS, for the closed-form fits of routers: a scatter matrix
/// accumulated from rows, its Cholesky factor, and batched triangular solves. An LDA router on six layers of
/// MiniLM has 2,304 features; scalar loops there cost ~25 ms per fitted row and ~6 ms per routed example, the
/// BLAS level-3 calls a small fraction of that.
///
/// Matrices are row-major `[Double]` of `n × n` (or `rows × n`), as the callers store them.
public enum DenseLinearAlgebra {
    /// Adds `aᵀ·a` to the upper triangle of `scatter` (`n × n`), where `a` is `rows × n` row-major.
    ///
    /// - Precondition: `a.count ≥ rows × n`, `scatter.count == n × n`.
    public static func addScatter(
        _ a: UnsafeBufferPointer<Double>, rows: Int, n: Int, into scatter: UnsafeMutableBufferPointer<Double>
    ) {
        precondition(a.count >= rows * n && scatter.count == n * n, "scatter shapes")
        guard rows > 0, n > 0, let ap = a.baseAddress, let sp = scatter.baseAddress else { return }
        cblas_dsyrk(
            CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(rows), 1, ap, Int32(n), 1, sp, Int32(n))
    }

    /// The lower Cholesky factor `L` (`A = L·Lᵀ`, row-major, zeros above the diagonal) of a symmetric
    /// positive-definite `n × n` matrix (only its upper triangle is read), or nil when it is not positive definite
    /// or holds a non-finite value.
    public static func choleskyLower(_ a: [Double], n: Int) -> [Double]? {
        precondition(a.count == n * n, "cholesky of \(a.count) values, not \(n) × \(n)")
        guard n > 0 else { return [] }
        var l = a
        var order = Int32(n)
        var lda = Int32(n)
        var info: Int32 = 0
        // Row-major upper = column-major lower of the same buffer; asking LAPACK for the column-major upper factor
        // U (A = UᵀU) leaves Uᵀ = L in the row-major lower triangle.
        var uplo = CChar(UInt8(ascii: "U"))
        dpotrf_(&uplo, &order, &l, &lda, &info, 1)
        guard info == 0 else { return nil }
        for i in 0..<n {
            guard l[i * n + i] > 0, l[i * n + i].isFinite else { return nil }
            for j in (i + 1)..<n { l[i * n + j] = 0 }
        }
        return l
    }

    /// Replaces every row `x` of `rows` (`count × n`, row-major) by `L⁻¹·x`, for a lower-triangular `n × n` `l`.
    public static func solveLowerRows(
        _ l: UnsafeBufferPointer<Double>, n: Int, rows: UnsafeMutableBufferPointer<Double>, count: Int
    ) {
        precondition(l.count == n * n && rows.count >= count * n, "triangular solve shapes")
        guard count > 0, n > 0, let lp = l.baseAddress, let xp = rows.baseAddress else { return }
        // X·L⁻ᵀ: row i becomes (L⁻¹ xᵢ)ᵀ.
        cblas_dtrsm(
            CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, Int32(count), Int32(n), 1, lp, Int32(n),
            xp, Int32(n))
    }

    /// `c = a·bᵀ` for row-major `a` (`m × k`) and `b` (`n × k`); `c` is `m × n`.
    public static func multiplyTransposed(
        _ a: UnsafeBufferPointer<Double>, _ b: UnsafeBufferPointer<Double>, m: Int, n: Int, k: Int,
        into c: UnsafeMutableBufferPointer<Double>
    ) {
        precondition(a.count >= m * k && b.count >= n * k && c.count >= m * n, "product shapes")
        guard m > 0, n > 0, let ap = a.baseAddress, let bp = b.baseAddress, let cp = c.baseAddress else { return }
        guard k > 0 else {
            cp.update(repeating: 0, count: m * n)
            return
        }
        cblas_dgemm(
            CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(n), Int32(k), 1, ap, Int32(k), bp, Int32(k), 0,
            cp, Int32(n))
    }
}
