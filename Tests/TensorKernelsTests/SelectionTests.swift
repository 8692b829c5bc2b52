import Testing

@testable import TensorKernels

@Suite("Selection")
struct SelectionTests {
    /// Values with heavy ties (like task vectors with untouched zeros) and a spread of magnitudes.
    static func sample(_ n: Int, seed: UInt64, ties: Bool) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in
            if ties, Int.random(in: 0..<3, using: &rng) == 0 { return 0 }
            if ties { return Float(Int.random(in: -20...20, using: &rng)) }
            return Float.random(in: -1...1, using: &rng)
        }
    }

    @Test(
        "partitionLargest puts exactly the k largest first and returns the k-th largest",
        arguments: [1, 7, 17, 100, 1000, 4099])
    func partitionMatchesSort(n: Int) {
        for ties in [false, true] {
            let values = Self.sample(n, seed: UInt64(n) &* 31 &+ (ties ? 1 : 0), ties: ties)
            let sorted = values.sorted(by: >)
            for k in Set([1, max(1, n / 3), max(1, n / 2), n]) {
                var work = values
                let kth = work.withUnsafeMutableBufferPointer { Selection.partitionLargest($0, k: k) }
                #expect(kth == sorted[k - 1])
                // The first k hold the k largest as a multiset.
                #expect(work[0..<k].sorted(by: >) == Array(sorted[0..<k]))
                // Nothing was lost or invented.
                #expect(work.sorted(by: >) == sorted)
            }
        }
    }

    @Test("NaN ranks below every number")
    func nanRanksLast() {
        var values: [Float] = (0..<40).map { Float($0) }
        values.insert(.nan, at: 5)
        values.insert(.nan, at: 30)
        var work = values
        let kth = work.withUnsafeMutableBufferPointer { Selection.partitionLargest($0, k: 40) }
        #expect(kth == 0)
        #expect(work[0..<40].allSatisfy { !$0.isNaN })
        var all = values
        let last = all.withUnsafeMutableBufferPointer { Selection.partitionLargest($0, k: 42) }
        #expect(last.isNaN)
    }

    @Test("kthLargestMagnitude ranks by |x| and leaves the input alone")
    func magnitude() {
        let values: [Float] = [0.5, -3, 2, -0.25, 1, -2]
        let kth = values.withUnsafeBufferPointer { Selection.kthLargestMagnitude($0, k: 2) }
        #expect(kth == 2)
        #expect(values == [0.5, -3, 2, -0.25, 1, -2])
    }
}

@Suite("Elementwise")
struct ElementwiseTests {
    /// Sizes that cross the SIMD tail and the multi-core threshold.
    static let sizes = [0, 1, 7, 8, 9, 1023, 1 << 17, (1 << 17) + 5]

    @Test("axpy, subtract and abs match scalar loops", arguments: sizes)
    func matchScalar(n: Int) {
        var rng = SplitMix64(seed: UInt64(n) + 11)
        let x = (0..<n).map { _ in Float.random(in: -4...4, using: &rng) }
        let y = (0..<n).map { _ in Float.random(in: -4...4, using: &rng) }
        var out = y
        out.withUnsafeMutableBufferPointer { o in x.withUnsafeBufferPointer { Elementwise.axpy(0.75, $0, o) } }
        #expect(out == zip(x, y).map { 0.75 * $0 + $1 })

        var diff = [Float](repeating: 0, count: n)
        diff.withUnsafeMutableBufferPointer { d in
            x.withUnsafeBufferPointer { xb in y.withUnsafeBufferPointer { Elementwise.subtract(xb, $0, into: d) } }
        }
        #expect(diff == zip(x, y).map { $0 - $1 })

        var mags = [Float](repeating: 0, count: n)
        mags.withUnsafeMutableBufferPointer { m in x.withUnsafeBufferPointer { Elementwise.abs($0, into: m) } }
        #expect(mags == x.map { Swift.abs($0) })
    }

    @Test("sums of squares and magnitudes agree with a Double reference", arguments: sizes)
    func sums(n: Int) {
        var rng = SplitMix64(seed: UInt64(n) + 99)
        let x = (0..<n).map { _ in Float.random(in: -2...2, using: &rng) }
        let squares = x.withUnsafeBufferPointer { Elementwise.sumOfSquares($0) }
        let magnitudes = x.withUnsafeBufferPointer { Elementwise.sumOfMagnitudes($0) }
        let refSquares = x.reduce(0.0) { $0 + Double($1) * Double($1) }
        let refMagnitudes = x.reduce(0.0) { $0 + Double(Swift.abs($1)) }
        #expect(Swift.abs(squares - refSquares) <= 1e-5 * max(1, refSquares))
        #expect(Swift.abs(magnitudes - refMagnitudes) <= 1e-5 * max(1, refMagnitudes))
    }
}
