import TensorKernels
import Testing

@testable import Evaluation

/// The order texts are batched in (`SentenceEncoder.batchOrder`): by length for one set of weights, group by group
/// for a mixed batch, so that texts sharing a mix share batches.
@Suite("Batch order")
struct BatchOrderTests {
    /// Distinct groups in each batch of `size` consecutive texts of `order`, summed over the batches.
    static func groupsPerBatch(_ order: [Int], groups: [Int], size: Int) -> Int {
        stride(from: 0, to: order.count, by: size).reduce(0) { sum, start in
            sum + Set(order[start..<min(order.count, start + size)].map { groups[$0] }).count
        }
    }

    @Test("without groups: by token count, ties by position")
    func byLength() {
        let lengths = [5, 3, 9, 3, 1, 5]
        #expect(SentenceEncoder.batchOrder(lengths: lengths) == [4, 1, 3, 0, 5, 2])
    }

    @Test("with groups: every group one run, by length within it, each text once, fewer groups per batch")
    func byGroup() {
        var g = SplitMix64(seed: 3)
        // Interleaved arrival: a few large groups (texts routed wholly to one task) among one-text groups.
        let count = 300
        let groups = (0..<count).map { i in i % 3 == 0 ? 100 + i : Int(g.next() % 6) }
        let lengths = (0..<count).map { _ in 3 + Int(g.next() % 60) }
        let order = SentenceEncoder.batchOrder(lengths: lengths, groups: groups)
        #expect(order.sorted() == Array(0..<count))
        var seen: Set<Int> = []
        for (k, i) in order.enumerated() {
            if k > 0, groups[order[k - 1]] == groups[i] {
                #expect(lengths[order[k - 1]] <= lengths[i], "lengths sorted within group \(groups[i])")
            } else {
                #expect(!seen.contains(groups[i]), "group \(groups[i]) split into two runs")
                seen.insert(groups[i])
            }
        }
        let distinct = Set(groups).count
        let batches = (count + 15) / 16
        let grouped = Self.groupsPerBatch(order, groups: groups, size: 16)
        let byLength = Self.groupsPerBatch(SentenceEncoder.batchOrder(lengths: lengths), groups: groups, size: 16)
        // Each batch boundary splits at most one group.
        #expect(grouped <= distinct + batches - 1)
        #expect(grouped < byLength)
    }
}
