import COpenBLAS
import Foundation

/// The leading singular triplets of a dense Float matrix: randomized (Halko, Martinsson & Tropp 2011, algorithm
/// 4.4: a Gaussian range finder with `powerIterations` re-orthonormalized power steps, then an exact SVD of the
/// small projected matrix) or exact (LAPACK `sgesdd`), on OpenBLAS.
///
/// Accuracy of the randomized method: with oversampling p and q power iterations, the expected error
/// ‖A − UₖΣₖVₖᵀ‖ is at most (1 + 4√(2·min(m,n)/(k−1)))^(1/(2q+1)) times the optimum σₖ₊₁ (spectral norm, HMT
/// corollary 10.10). For the Frobenius norm the extraction reports, measured: within 0.1 % of the optimum on
/// low-rank-plus-noise test matrices (`TruncatedSVDTests`) and within 0.2 % of numpy's exact SVD on MiniLM
/// fine-tune deltas at rank 32 (`interop/test_lora_extract.py`, `docs/merge.md`). When `rank + p` reaches half
/// of min(m, n) the randomized method saves little, and the exact one runs instead.
public enum TruncatedSVD {
    public enum Method: String, Sendable, CaseIterable {
        case randomized, exact
    }

    public struct Settings: Sendable, Equatable {
        public var method: Method
        /// Extra columns sampled beyond the rank (p).
        public var oversampling: Int
        /// Power iterations (q); each costs two products with the matrix and sharpens a flat spectrum.
        public var powerIterations: Int
        /// Seed of the Gaussian test matrix (mixed with a per-matrix key, so runs are reproducible).
        public var seed: UInt64

        public init(method: Method = .randomized, oversampling: Int = 16, powerIterations: Int = 3, seed: UInt64 = 0) {
            self.method = method
            self.oversampling = oversampling
            self.powerIterations = powerIterations
            self.seed = seed
        }
    }

    /// A ≈ U·diag(S)·Vᵀ with `count` triplets, singular values descending.
    public struct Factors: Sendable {
        public let rows: Int
        public let cols: Int
        /// Triplets computed (at least the requested rank; the randomized method returns rank + p).
        public let count: Int
        public let singularValues: [Float]
        /// Uᵀ row-major (count × rows): left singular vector i is `uT[i*rows ..< (i+1)*rows]`.
        public let uT: [Float]
        /// Vᵀ row-major (count × cols): right singular vector i is `vT[i*cols ..< (i+1)*cols]`.
        public let vT: [Float]
        /// The method that ran (randomized requests fall back to exact on small matrices).
        public let method: Method
    }

    /// Failure of a LAPACK routine (its name and `info`); the caller names the tensor.
    public struct Failure: Error, Sendable, Equatable {
        public let routine: String
        public let info: Int32
    }

    /// Decomposes the row-major `rows × cols` matrix `a` to at least `rank` triplets.
    ///
    /// - Parameters:
    ///   - key: mixed into the seed (the tensor name), so each matrix gets its own test matrix.
    /// - Throws: `Failure` when LAPACK reports an illegal argument or no convergence (non-finite input).
    /// - Complexity: randomized O(m·n·(k+p)·(2q+2)) flops; exact O(m·n·min(m,n)).
    public static func decompose(
        _ a: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int, rank: Int, settings: Settings = Settings(),
        key: String = ""
    ) throws(Failure) -> Factors {
        precondition(m > 0 && n > 0 && a.count == m * n, "matrix size does not match rows × cols")
        precondition(rank >= 1 && rank <= min(m, n), "rank must be in 1...min(rows, cols)")
        let minDim = min(m, n)
        let l = min(minDim, rank + max(0, settings.oversampling))
        if settings.method == .exact || 2 * l >= minDim {
            return try exact(a, rows: m, cols: n)
        }
        return try randomized(a, rows: m, cols: n, l: l, settings: settings, key: key)
    }

    /// sgesdd on the whole matrix. The row-major m × n buffer is column-major Aᵀ (n × m): its SVD Aᵀ = Û Σ V̂ᵀ
    /// gives A = V̂ Σ Ûᵀ, so Vᵀ's rows are Û's columns and U's columns are V̂ᵀ's columns.
    static func exact(_ a: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int) throws(Failure) -> Factors {
        let k = min(m, n)
        var work = Array(a)  // sgesdd destroys its input
        var s = [Float](repeating: 0, count: k)
        var uhat = [Float](repeating: 0, count: n * k)  // n × k, ld n
        var vhatT = [Float](repeating: 0, count: k * m)  // k × m, ld k
        try gesdd(&work, rows: n, cols: m, s: &s, u: &uhat, vt: &vhatT)
        var uT = [Float](repeating: 0, count: k * m)
        for r in 0..<m { for i in 0..<k { uT[i * m + r] = vhatT[r * k + i] } }
        return Factors(rows: m, cols: n, count: k, singularValues: s, uT: uT, vT: uhat, method: .exact)
    }

    /// HMT algorithm 4.4 in column-major terms (the row-major matrix is the column-major Aᵀ with ld n).
    static func randomized(
        _ a: UnsafeBufferPointer<Float>, rows m: Int, cols n: Int, l: Int, settings: Settings, key: String
    ) throws(Failure) -> Factors {
        guard let ap = a.baseAddress else { preconditionFailure("empty matrix") }
        var rng = SplitMix64(seed: settings.seed, key: key, stream: 0x5356_44)
        var omega = [Float](repeating: 0, count: n * l)  // n × l Gaussian
        var i = 0
        while i < omega.count {
            // Box-Muller: two standard normals from two uniforms.
            let u1 = max(rng.nextUnit(), 0x1p-53)
            let u2 = rng.nextUnit()
            let r = (-2 * log(u1)).squareRoot()
            omega[i] = Float(r * cos(2 * Double.pi * u2))
            if i + 1 < omega.count { omega[i + 1] = Float(r * sin(2 * Double.pi * u2)) }
            i += 2
        }
        var y = [Float](repeating: 0, count: m * l)  // m × l, ld m
        var z = [Float](repeating: 0, count: n * l)  // n × l, ld n
        let (mi, ni, li) = (Int32(m), Int32(n), Int32(l))
        // Y = A·Ω
        cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, mi, li, ni, 1, ap, ni, omega, ni, 0, &y, mi)
        try orthonormalize(&y, rows: m, cols: l)
        for _ in 0..<max(0, settings.powerIterations) {
            // Z = Aᵀ·Q, orthonormalized; Y = A·Z, orthonormalized (re-orthonormalizing each half-step keeps the
            // small singular directions from drowning in round-off, HMT algorithm 4.4).
            cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, ni, li, mi, 1, ap, ni, y, mi, 0, &z, ni)
            try orthonormalize(&z, rows: n, cols: l)
            cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, mi, li, ni, 1, ap, ni, z, ni, 0, &y, mi)
            try orthonormalize(&y, rows: m, cols: l)
        }
        // Bᵀ = Aᵀ·Q (n × l); Bᵀ = Û Σ V̂ᵀ, so A ≈ Q·B = (Q V̂) Σ Ûᵀ.
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, ni, li, mi, 1, ap, ni, y, mi, 0, &z, ni)
        var s = [Float](repeating: 0, count: l)
        var uhat = [Float](repeating: 0, count: n * l)  // n × l: column i is Vᵀ's row i
        var vhatT = [Float](repeating: 0, count: l * l)
        try gesdd(&z, rows: n, cols: l, s: &s, u: &uhat, vt: &vhatT)
        // U = Q·V̂ (m × l, ld m): column i contiguous, which is Uᵀ row-major.
        var u = [Float](repeating: 0, count: m * l)
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, mi, li, li, 1, y, mi, vhatT, li, 0, &u, mi)
        return Factors(rows: m, cols: n, count: l, singularValues: s, uT: u, vT: uhat, method: .randomized)
    }

    /// Replaces the column-major rows × cols (rows ≥ cols) matrix by an orthonormal basis of its columns
    /// (Householder QR: sgeqrf then sorgqr).
    static func orthonormalize(_ x: inout [Float], rows: Int, cols: Int) throws(Failure) {
        var (mm, nn, lda, info) = (Int32(rows), Int32(cols), Int32(rows), Int32(0))
        var tau = [Float](repeating: 0, count: cols)
        var query: Float = 0
        var lwork: Int32 = -1
        sgeqrf_(&mm, &nn, &x, &lda, &tau, &query, &lwork, &info)
        var kk = nn
        var query2: Float = 0
        sorgqr_(&mm, &nn, &kk, &x, &lda, tau, &query2, &lwork, &info)
        var work = [Float](repeating: 0, count: max(1, Int(max(query, query2))))
        lwork = Int32(work.count)
        sgeqrf_(&mm, &nn, &x, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sgeqrf", info: info) }
        sorgqr_(&mm, &nn, &kk, &x, &lda, tau, &work, &lwork, &info)
        guard info == 0 else { throw Failure(routine: "sorgqr", info: info) }
    }

    /// Thin SVD (jobz 'S') of the column-major rows × cols matrix `a` (destroyed): u is rows × k (ld rows), vt is
    /// k × cols (ld k), k = min(rows, cols).
    static func gesdd(
        _ a: inout [Float], rows: Int, cols: Int, s: inout [Float], u: inout [Float], vt: inout [Float]
    ) throws(Failure) {
        let k = min(rows, cols)
        var (mm, nn, lda, ldu, ldvt, info) = (Int32(rows), Int32(cols), Int32(rows), Int32(rows), Int32(k), Int32(0))
        var jobz = CChar(UInt8(ascii: "S"))
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var query: Float = 0
        var lwork: Int32 = -1
        sgesdd_(&jobz, &mm, &nn, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &query, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
        // The workspace size comes back as a Float; round up so a large value truncated to 24 bits still fits.
        var work = [Float](repeating: 0, count: max(1, Int(query * (1 + 0x1p-20)) + 1))
        lwork = Int32(work.count)
        sgesdd_(&jobz, &mm, &nn, &a, &lda, &s, &u, &ldu, &vt, &ldvt, &work, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw Failure(routine: "sgesdd", info: info) }
    }
}
