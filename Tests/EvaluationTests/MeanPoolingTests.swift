import Testing

@testable import Evaluation

@Suite("Mean pooling")
struct MeanPoolingTests {
    @Test(
        "rows are the mean over each sequence's tokens; normalize scales them to unit length; an empty sequence pools to zeros"
    )
    func pooling() {
        // Two sequences of hidden size 2: rows 0-1 (lengths 2), then an empty one, then row 2.
        let values: [Float] = [1, 2, 3, 6, 4, -3]
        values.withUnsafeBufferPointer { v in
            let states = HiddenStates(values: v, starts: [0, 2, 2], lengths: [2, 0, 1], hiddenSize: 2)
            #expect(MeanPooling().pool(states) == [2, 4, 0, 0, 4, -3])
            let unit = MeanPooling(normalize: true).pool(states)
            #expect(
                abs(unit[0] - 2 / Float(20).squareRoot()) < 1e-7 && abs(unit[1] - 4 / Float(20).squareRoot()) < 1e-7)
            #expect(Array(unit[2...]) == [0, 0, 0.8, -0.6])
        }
    }
}
