import Testing

@testable import TensorKernels

/// The OpenBLAS/LAPACK calls against plain triple loops on random matrices (odd sizes, so no block fits exactly).
struct DenseLinearAlgebraTests {
    static func random(_ count: Int, seed: UInt64) -> [Double] {
        var rng = SplitMix64(seed: seed)
        return (0..<count).map { _ in rng.nextUnit() * 2 - 1 }
    }

    @Test("the scatter update adds aᵀa to the upper triangle and leaves the lower one alone", arguments: [1, 7, 67])
    func scatter(n: Int) {
        let rows = 45
        let a = Self.random(rows * n, seed: UInt64(n))
        var s = [Double](repeating: 0.5, count: n * n)
        a.withUnsafeBufferPointer { ab in
            s.withUnsafeMutableBufferPointer { DenseLinearAlgebra.addScatter(ab, rows: rows, n: n, into: $0) }
        }
        for i in 0..<n {
            for j in 0..<n {
                let expected = j >= i ? 0.5 + (0..<rows).reduce(0.0) { $0 + a[$1 * n + i] * a[$1 * n + j] } : 0.5
                #expect(abs(s[i * n + j] - expected) < 1e-12 * Double(rows))
            }
        }
    }

    @Test("the Cholesky factor is lower triangular and L·Lᵀ gives the matrix back", arguments: [1, 5, 130])
    func cholesky(n: Int) throws {
        let b = Self.random(n * n, seed: 7 + UInt64(n))
        // B·Bᵀ + n·I: symmetric positive definite.
        var a = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in 0..<n {
                a[i * n + j] = (0..<n).reduce(i == j ? Double(n) : 0) { $0 + b[i * n + $1] * b[j * n + $1] }
            }
        }
        let l = try #require(DenseLinearAlgebra.choleskyLower(a, n: n))
        for i in 0..<n {
            for j in 0..<n {
                if j > i { #expect(l[i * n + j] == 0) }
                let back = (0..<n).reduce(0.0) { $0 + l[i * n + $1] * l[j * n + $1] }
                #expect(abs(back - a[i * n + j]) < 1e-9 * Double(n))
            }
        }
    }

    @Test("a matrix that is not positive definite, or holds NaN, has no factor")
    func notPositiveDefinite() {
        #expect(DenseLinearAlgebra.choleskyLower([1, 2, 2, 1], n: 2) == nil)
        #expect(DenseLinearAlgebra.choleskyLower([1, 0, 0, 0], n: 2) == nil)
        #expect(DenseLinearAlgebra.choleskyLower([.nan, 0, 0, 1], n: 2) == nil)
    }

    @Test("solving rows by L equals forward substitution; the product equals a·bᵀ")
    func solveAndMultiply() {
        let n = 37
        let count = 11
        var l = Self.random(n * n, seed: 3)
        for i in 0..<n {
            for j in (i + 1)..<n { l[i * n + j] = 0 }
            l[i * n + i] = 2 + abs(l[i * n + i])
        }
        let x = Self.random(count * n, seed: 4)
        var solved = x
        l.withUnsafeBufferPointer { lb in
            solved.withUnsafeMutableBufferPointer {
                DenseLinearAlgebra.solveLowerRows(lb, n: n, rows: $0, count: count)
            }
        }
        for r in 0..<count {
            var z = [Double](repeating: 0, count: n)
            for i in 0..<n {
                z[i] = (x[r * n + i] - (0..<i).reduce(0.0) { $0 + l[i * n + $1] * z[$1] }) / l[i * n + i]
                #expect(abs(solved[r * n + i] - z[i]) < 1e-12)
            }
        }
        let b = Self.random(5 * n, seed: 5)
        var c = [Double](repeating: .nan, count: count * 5)
        x.withUnsafeBufferPointer { xb in
            b.withUnsafeBufferPointer { bb in
                c.withUnsafeMutableBufferPointer {
                    DenseLinearAlgebra.multiplyTransposed(xb, bb, m: count, n: 5, k: n, into: $0)
                }
            }
        }
        for i in 0..<count {
            for j in 0..<5 {
                let expected = (0..<n).reduce(0.0) { $0 + x[i * n + $1] * b[j * n + $1] }
                #expect(abs(c[i * 5 + j] - expected) < 1e-12)
            }
        }
    }
}
