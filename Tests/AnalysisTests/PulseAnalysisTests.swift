import CheckpointIO
import Foundation
import TaskSwitches
import TestSupport
import Testing

@testable import Analysis

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// The weight side of the pulse experiment and the coding study on a hand-made pair whose shares are worked out
/// by hand: tensor `a` (2 × 3) moves by τ = [4, −3, 2, −1, 0, 1], tensor `b` (4) does not move.
///
/// Per sign, positives {4, 2, 1}, negatives {3, 1}: Σ|τ| = 11, Σ τ² = 31. At α = 0.5 P-Discard keeps ⌊1.5⌋ = 1
/// positive and ⌊1⌋ = 1 negative: the largest (4, −3: mass 7, energy 25) or the smallest (1, −1: mass 2, energy
/// 2). At α = 0.95 it keeps none.
@Suite("Pulse analysis and coding study on a hand-made task vector")
struct PulseAnalysisTests {
    static let baseA: [Float] = [0.5, 0.25, -0.5, 1, 0, 0.125]
    static let tauA: [Float] = [4, -3, 2, -1, 0, 1]
    static let baseB: [Float] = [0.5, -0.5, 2, 0]

    /// Writes `base.safetensors` and `fine.safetensors` into `dir` (all values exact in F32, so f − b is τ).
    static func writePair(in dir: URL, tau: [Float] = tauA) throws -> (base: ModelFolder, fine: ModelFolder) {
        let specs = [
            TensorSpec(name: "a", dtype: .F32, shape: [2, 3]), TensorSpec(name: "b", dtype: .F32, shape: [4]),
        ]
        for (file, a) in [("base", baseA), ("fine", zip(baseA, tau).map { $0 + $1 })] {
            let w = try SafeTensorsWriter(path: dir.appendingPathComponent("\(file).safetensors").path, tensors: specs)
            try w.write("a", floats: a)
            try w.write("b", floats: baseB)
            try w.finish()
        }
        return (
            try ModelFolder(path: dir.appendingPathComponent("base.safetensors").path),
            try ModelFolder(path: dir.appendingPathComponent("fine.safetensors").path)
        )
    }

    @Test("kept mass and energy shares per strategy equal the hand-computed ones; unchanged tensors are not counted")
    func sharesByHand() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, fine) = try Self.writePair(in: dir)
        let pulse = try PulseAnalysis(base: base, fineTuned: fine, dropRatios: [0, 0.5, 0.95])
        #expect(pulse.parameters == 10)
        #expect(pulse.tensors == 1)
        #expect(pulse.points.map(\.dropRatio) == [0, 0.5, 0.95])
        let all = pulse.points[0]
        for s in PulseAnalysis.Strategy.allCases {
            #expect(abs((all.mass[s] ?? -1) - 1) < 1e-12 && abs((all.energy[s] ?? -1) - 1) < 1e-12, "\(s)")
        }
        let half = pulse.points[1]
        #expect(abs((half.mass[.discardLow] ?? -1) - 7.0 / 11) < 1e-12)
        #expect(abs((half.energy[.discardLow] ?? -1) - 25.0 / 31) < 1e-12)
        #expect(abs((half.mass[.discardHigh] ?? -1) - 2.0 / 11) < 1e-12)
        #expect(abs((half.energy[.discardHigh] ?? -1) - 2.0 / 31) < 1e-12)
        let random = try #require(half.mass[.random])
        #expect(random >= 0 && random <= 1)
        let none = pulse.points[2]
        #expect(none.mass[.discardLow] == 0 && none.mass[.discardHigh] == 0)
        // Random keeps an entry at α iff its draw is ≥ α, so its share cannot grow with α.
        let randomShares = pulse.points.compactMap { $0.mass[.random] }
        #expect(randomShares.count == 3 && zip(randomShares, randomShares.dropFirst()).allSatisfy { $0 >= $1 })
    }

    @Test("a task vector that is zero everywhere and a drop ratio of 1 are refused with their codes")
    func refusals() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, fine) = try Self.writePair(in: dir, tau: [0, 0, 0, 0, 0, 0])
        let empty = thrownError(SwitchError.self) { _ = try PulseAnalysis(base: base, fineTuned: fine) }
        #expect(empty?.code == .emptyTaskVector)
        #expect(empty?.message.contains(fine.path) == true)
        let other = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: other) }
        let (b2, f2) = try Self.writePair(in: other)
        let ratio = thrownError(SwitchError.self) { _ = try PulseAnalysis(base: b2, fineTuned: f2, dropRatios: [1]) }
        #expect(ratio?.code == .invalidDropRatio)
    }

    @Test("the coding study's floor and group-of-4 sizes equal the formulas worked by hand")
    func codingStudyByHand() throws {
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (base, fine) = try Self.writePair(in: dir)
        let rows = try CodingStudy.run(base: base, fineTuned: fine, dropRatios: [0.5])
        let row = try #require(rows.first)
        #expect(rows.count == 1 && row.dropRatio == 0.5)
        #expect(Set(row.bits.keys) == Set(CodingStudy.codings))
        // Kept at α = 0.5: a[0] = 4 and a[1] = −3, so d = 2/6 in `a`; `b` keeps nothing (if the pack lists it).
        let d = 2.0 / 6
        let h = -(d * log2(d)) - (1 - d) * log2(1 - d)
        #expect(abs(row.floorBits - 6 * (h + d)) < 1e-9)
        // Official layout: one bit per group of 4 (⌈n/4⌉), 4 occupancy bits per non-empty group, one sign per kept
        // entry. `a`: 2 + 4·1 + 2 = 8 bits; `b` (4 entries, nothing kept): 1 bit.
        let pack = try SwitchPack.build(base: base, fineTuned: fine, dropRatio: 0.5, task: "study")
        let listsB = pack.tensors.contains { $0.name == "b" }
        #expect(row.bits["official group-of-4"] == (listsB ? 9 : 8))
        #expect(row.parameters == (listsB ? 10 : 6))
        #expect(abs(row.density - 2.0 / Double(row.parameters)) < 1e-12)
        for coding in CodingStudy.codings { #expect((row.bits[coding] ?? 0) > 0, "\(coding)") }
    }

    @Test("the SVG plot is well-formed XML with one polyline per series, mapped to the plot area, labels escaped")
    func linePlot() throws {
        let plot = LinePlot(
            title: "kept <mass> & energy", xLabel: "drop ratio", yLabel: "share", xRange: 0...1, yRange: 0...1,
            series: [
                .init(label: "low", color: "#1f77b4", points: [(0, 0), (1, 1)]),
                .init(label: "a < b", color: "#d62728", dashed: true, points: [(0.5, 0.5)]),
            ])
        let svg = plot.svg()
        // Plot area: x from 70 to 720 − 190 = 530 px, y from 460 − 60 = 400 (bottom) to 40 px (top).
        #expect(svg.contains("<polyline points=\"70.0,400.0 530.0,40.0\""))
        #expect(svg.contains("<polyline points=\"300.0,220.0\""))
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 2)
        // The dashed series' polyline and legend line, not the solid one's.
        #expect(svg.components(separatedBy: "stroke-dasharray=\"6 4\"").count - 1 == 2)
        #expect(svg.contains(">kept &lt;mass&gt; &amp; energy</text>"))
        #expect(svg.contains(">a &lt; b</text>"))
        #if canImport(FoundationXML) || os(macOS)
            let parser = XMLParser(data: Data(svg.utf8))
            #expect(parser.parse(), "\(parser.parserError.map { "\($0)" } ?? "")")
        #endif
    }
}
