import Testing

@testable import TensorKernels

/// `SwitchKernel.add`, the loop every switch is applied with.
struct SwitchKernelTests {
    @Test("add stops at the list bound and the tensor bound, saves what it overwrites, and matches x + c, x + c·v")
    func bounds() {
        var w: [Float] = (0..<10).map { Float($0) * 0.1 }
        let before = w
        let indices: [UInt32] = [1, 3, 4, 8]
        let values: [Float] = [2, -1, 0.5, 3]
        var saved = [Float](repeating: .nan, count: 4)
        let c: Float = 0.3
        let next = indices.withUnsafeBufferPointer { ib in
            values.withUnsafeBufferPointer { vb in
                w.withUnsafeMutableBufferPointer { wb in
                    saved.withUnsafeMutableBufferPointer { sb in
                        SwitchKernel.add(
                            c, at: ib, times: vb, to: wb.baseAddress!, saving: sb.baseAddress!, from: 1, stop: 4,
                            below: 8)
                    }
                }
            }
        }
        // Entries 1 and 2 (indices 3, 4); index 8 is outside the tile, index 1 before the start.
        #expect(next == 3)
        #expect(saved[0].isNaN && saved[3].isNaN)
        #expect(saved[1] == before[3] && saved[2] == before[4])
        var want = before
        want[3] = before[3] + c * -1
        want[4] = before[4] + c * 0.5
        #expect(w.map(\.bitPattern) == want.map(\.bitPattern))

        // Signs on the whole tensor: +c at the positive list, then −c at the negative one.
        var signed = before
        signed.withUnsafeMutableBufferPointer { SwitchKernel.addSigns(c, positive: [0, 9], negative: [2], to: $0) }
        want = before
        want[0] = before[0] + c
        want[9] = before[9] + c
        want[2] = before[2] - c
        #expect(signed.map(\.bitPattern) == want.map(\.bitPattern))
    }
}
