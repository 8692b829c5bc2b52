import Foundation
import TensorKernels
import Testing

@testable import TaskSwitches

/// P-Discard against the NumPy reference (`scripts/fixtures/switch_reference.py`): random tensors with ties, and
/// slices of a real MiniLM fine-tune's task vector.
struct PDiscardTests {
    struct Case: Decodable, Sendable, CustomTestStringConvertible {
        let tensor: String
        let shape: [Int]
        let alpha: Double
        let ties: String
        let positive_count: Int
        let negative_count: Int
        let positive_nonzero: Int
        let negative_nonzero: Int
        let positive_hash: String
        let negative_hash: String
        let lambda_bits: UInt32
        let first_positive: [UInt32]
        let first_negative: [UInt32]
        var testDescription: String { "\(tensor) α=\(alpha) \(ties)" }
    }

    static let cases: [Case] = {
        struct Manifest: Decodable { let cases: [Case] }
        guard let data = try? Data(contentsOf: Fixture.url("pdiscard/manifest.json")),
            let m = try? JSONDecoder().decode(Manifest.self, from: data)
        else { return [] }
        return m.cases
    }()

    @Test("the fixture manifest holds random and real task vectors")
    func manifestLoaded() {
        #expect(Self.cases.count >= 72)
        #expect(Self.cases.contains { $0.tensor.hasPrefix("real_") })
    }

    @Test("P-Discard matches NumPy bit for bit: kept indices, counts and λ", arguments: cases)
    func matchesReference(_ c: Case) throws {
        let tau = try Fixture.floats("pdiscard/\(c.tensor).f32")
        #expect(tau.count == c.shape.reduce(1, *))
        let rule = try #require(PDiscard.TieRule(rawValue: c.ties))
        let r = try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: c.alpha, ties: rule) }
        let result = try #require(r)
        #expect(result.positiveCount == c.positive_nonzero)
        #expect(result.negativeCount == c.negative_nonzero)
        #expect(result.positive.count == c.positive_count)
        #expect(result.negative.count == c.negative_count)
        #expect(Array(result.positive.prefix(8)) == c.first_positive)
        #expect(Array(result.negative.prefix(8)) == c.first_negative)
        #expect(indexHash(result.positive) == c.positive_hash)
        #expect(indexHash(result.negative) == c.negative_hash)
        #expect(result.lambda.bitPattern == c.lambda_bits)
    }

    @Test("an all-zero task vector is skipped")
    func allZero() throws {
        let tau = [Float](repeating: 0, count: 100)
        let r = try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: 0.5) }
        #expect(r == nil)
    }

    @Test("NaN and infinity in τ are errors naming the index")
    func nonFinite() {
        for bad in [Float.nan, .infinity, -.infinity] {
            let tau: [Float] = [0.1, -0.2, bad, 0.3]
            #expect(throws: PDiscard.Failure.nonFinite(index: 2)) {
                _ = try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: 0.5) }
            }
        }
    }

    @Test("the lowest-index rule keeps exactly k of tied entries, the official rule keeps all of them")
    func tieRules() throws {
        // Four positives tied at 1, one at 2; α = 0.6 keeps ⌊0.4·5⌋ = 2.
        let tau: [Float] = [1, 1, 2, 1, 1]
        let low = try #require(
            try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: 0.6, ties: .lowestIndex) })
        #expect(low.positive == [0, 2])
        let all = try #require(
            try tau.withUnsafeBufferPointer { try PDiscard.run($0, dropRatio: 0.6, ties: .keepAllTied) })
        #expect(all.positive == [0, 1, 2, 3, 4])
        // λ of {1, 2}: sqrt(5/2).
        #expect(low.lambda == Float((2.5).squareRoot()))
    }

    @Test("keep counts follow the official code's floating-point floor")
    func keepCount() {
        #expect(PDiscard.keepCount(10, dropRatio: 0.9) == 0)  // 10 · 0.09999999999999998 < 1
        #expect(PDiscard.keepCount(100, dropRatio: 0.7) == 30)
        #expect(PDiscard.keepCount(7, dropRatio: 0) == 7)
    }
}
