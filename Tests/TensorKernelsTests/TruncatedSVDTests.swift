import Foundation
import Testing

@testable import TensorKernels

/// The truncated SVD against matrices built with known singular values: A = U·diag(σ)·Vᵀ with U, V orthonormalized
/// in Double here (modified Gram-Schmidt, no LAPACK), so the optimal rank-k error √(Σ_{i≥k} σᵢ²) is known exactly
/// (Eckart-Young) and the kernel's error is measured in Double against it.
@Suite("Truncated SVD")
struct TruncatedSVDTests {
    /// `count` orthonormal columns of length `length`, from Gaussian vectors (column j is `q[j]`).
    static func orthonormalColumns(_ length: Int, _ count: Int, seed: UInt64) -> [[Double]] {
        var rng = SplitMix64(seed: seed)
        var q: [[Double]] = []
        for _ in 0..<count {
            var v = (0..<length).map { _ in
                (-2 * log(max(rng.nextUnit(), 1e-300))).squareRoot() * cos(2 * Double.pi * rng.nextUnit())
            }
            for _ in 0..<2 {  // twice is enough (Kahan)
                for b in q {
                    let d = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }
                    for i in 0..<length { v[i] -= d * b[i] }
                }
            }
            let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            q.append(v.map { $0 / norm })
        }
        return q
    }

    /// Row-major m × n Float matrix with singular values `sigma` (count min(m, n)).
    static func matrix(_ m: Int, _ n: Int, sigma: [Double], seed: UInt64) -> [Float] {
        let u = orthonormalColumns(m, sigma.count, seed: seed)
        let v = orthonormalColumns(n, sigma.count, seed: seed &+ 1)
        var a = [Float](repeating: 0, count: m * n)
        for r in 0..<m {
            for c in 0..<n {
                var s = 0.0
                for i in 0..<sigma.count { s += u[i][r] * sigma[i] * v[i][c] }
                a[r * n + c] = Float(s)
            }
        }
        return a
    }

    /// ‖A − Σ_{i<k} σᵢuᵢvᵢᵀ‖_F in Double.
    static func error(_ a: [Float], _ f: TruncatedSVD.Factors, rank k: Int) -> Double {
        let (m, n) = (f.rows, f.cols)
        var e = 0.0
        for r in 0..<m {
            for c in 0..<n {
                var s = 0.0
                for i in 0..<k { s += Double(f.uT[i * m + r]) * Double(f.singularValues[i]) * Double(f.vT[i * n + c]) }
                let d = Double(a[r * n + c]) - s
                e += d * d
            }
        }
        return e.squareRoot()
    }

    static func spectra(_ kind: String, _ count: Int) -> [Double] {
        switch kind {
        // A strong low-rank part over a flat noise floor.
        case "low-rank + noise": return (0..<count).map { $0 < 6 ? 10 * pow(0.7, Double($0)) : 0.05 }
        // A slowly decaying spectrum, like a fine-tune's task vector: the hard case for a range finder.
        default: return (0..<count).map { 1 / (1 + 0.05 * Double($0)) }
        }
    }

    @Test(
        "Rank-k error is within 0.1 % (randomized) or 0.01 % (exact) of the optimum",
        arguments: [
            ("low-rank + noise", 180, 120, 8), ("low-rank + noise", 96, 300, 16), ("slow decay", 200, 160, 12),
            ("slow decay", 160, 200, 24),
        ])
    func errorNearOptimum(_ kind: String, _ m: Int, _ n: Int, _ k: Int) throws {
        let sigma = Self.spectra(kind, min(m, n))
        let a = Self.matrix(m, n, sigma: sigma, seed: UInt64(m * 7 + n))
        let optimum = sigma[k...].reduce(0) { $0 + $1 * $1 }.squareRoot()
        for method in TruncatedSVD.Method.allCases {
            let f = try a.withUnsafeBufferPointer {
                try TruncatedSVD.decompose(
                    $0, rows: m, cols: n, rank: k, settings: .init(method: method), key: "t")
            }
            #expect(f.method == method)
            #expect(f.count >= k)
            let e = Self.error(a, f, rank: k)
            let bound = method == .exact ? 1.0001 : 1.001
            #expect(e <= optimum * bound, "\(kind) \(m)×\(n) rank \(k) \(method): error \(e), optimum \(optimum)")
            // The leading singular values themselves.
            for i in 0..<k {
                #expect(abs(Double(f.singularValues[i]) - sigma[i]) <= 2e-3 * sigma[0], "σ\(i) \(method)")
            }
        }
    }

    @Test("Returned singular vectors are orthonormal and values descend")
    func orthonormal() throws {
        let (m, n, k) = (150, 90, 10)
        let a = Self.matrix(m, n, sigma: Self.spectra("slow decay", min(m, n)), seed: 3)
        let f = try a.withUnsafeBufferPointer { try TruncatedSVD.decompose($0, rows: m, cols: n, rank: k) }
        #expect(f.method == .randomized)
        for i in 0..<k {
            for j in 0...i {
                let du = (0..<m).reduce(0.0) { $0 + Double(f.uT[i * m + $1]) * Double(f.uT[j * m + $1]) }
                let dv = (0..<n).reduce(0.0) { $0 + Double(f.vT[i * n + $1]) * Double(f.vT[j * n + $1]) }
                #expect(abs(du - (i == j ? 1 : 0)) < 1e-4)
                #expect(abs(dv - (i == j ? 1 : 0)) < 1e-4)
            }
            if i > 0 { #expect(f.singularValues[i] <= f.singularValues[i - 1]) }
        }
    }

    @Test("A randomized request near min(m, n) runs the exact SVD; the same key gives the same factors")
    func fallbackAndDeterminism() throws {
        let a = Self.matrix(40, 30, sigma: Self.spectra("slow decay", 30), seed: 9)
        let f = try a.withUnsafeBufferPointer { try TruncatedSVD.decompose($0, rows: 40, cols: 30, rank: 10) }
        #expect(f.method == .exact && f.count == 30)
        let b = Self.matrix(300, 200, sigma: Self.spectra("slow decay", 200), seed: 10)
        let g1 = try b.withUnsafeBufferPointer {
            try TruncatedSVD.decompose($0, rows: 300, cols: 200, rank: 8, key: "x")
        }
        let g2 = try b.withUnsafeBufferPointer {
            try TruncatedSVD.decompose($0, rows: 300, cols: 200, rank: 8, key: "x")
        }
        #expect(g1.singularValues == g2.singularValues && g1.vT == g2.vT)
    }

    @Test("A non-finite matrix is a LAPACK failure or non-finite output, never a crash")
    func nonFinite() {
        var a = Self.matrix(60, 50, sigma: Self.spectra("slow decay", 50), seed: 11)
        a[17] = .nan
        let result = a.withUnsafeBufferPointer { p in
            Result { () throws(TruncatedSVD.Failure) in
                try TruncatedSVD.decompose(p, rows: 60, cols: 50, rank: 4, settings: .init(method: .exact))
            }
        }
        switch result {
        case .success(let f): #expect(!f.singularValues.allSatisfy { $0.isFinite })
        case .failure(let e): #expect(e.routine == "sgesdd")
        }
    }
}
