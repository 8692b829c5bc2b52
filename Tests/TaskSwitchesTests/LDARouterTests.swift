import Foundation
import TestSupport
import Testing

@testable import TaskSwitches

/// The LDA per-example router against the numpy reference (scripts/fixtures/router_lda.py) and its file format.
struct LDARouterTests {
    struct Reference: Decodable {
        let shrinkage: Double
        let centre: [Double]
        let weights: [[Double]]
        let bias: [Double]
        let cholesky: [[Double]]
        let ood_threshold: Double
        let scores: [[Double]]
        let routes: [Int]
    }

    static func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: Fixture.url("router/reference.json")))
    }

    static func fitted() throws -> LDARouter {
        let train = try QuerySet(path: Fixture.url("router/train.safetensors").path, requireLabels: true)
        return try LDARouter.fit(
            train, shrinkage: try reference().shrinkage, baseFingerprint: BaseFingerprint(value: 0x1234_5678_9abc_def0))
    }

    @Test("the fit matches numpy's centre, w_k, b_k, Cholesky factor and OOD threshold within 1e-4")
    func fitMatchesNumpy() throws {
        let ref = try Self.reference()
        let r = try Self.fitted()
        let d = r.dimension
        #expect(d == 8 && r.tasks == ["alpha", "beta", "gamma"])
        for j in 0..<d { #expect(abs(Double(r.centre[j]) - ref.centre[j]) < 1e-4) }
        for k in 0..<3 {
            for j in 0..<d { #expect(abs(Double(r.weights[k * d + j]) - ref.weights[k][j]) < 1e-4) }
            #expect(abs(Double(r.bias[k]) - ref.bias[k]) < 1e-4)
        }
        for i in 0..<d {
            for j in 0..<d { #expect(abs(Double(r.choleskyFactor[i * d + j]) - ref.cholesky[i][j]) < 1e-4) }
        }
        #expect(abs(Double(r.oodThreshold) - ref.ood_threshold) < 1e-4 * max(1, abs(ref.ood_threshold)))
    }

    @Test("routing equals the numpy reference, out-of-distribution inputs going to the base")
    func routesMatchNumpy() throws {
        let ref = try Self.reference()
        let r = try Self.fitted()
        let test = try QuerySet(path: Fixture.url("router/test.safetensors").path, requireLabels: true)
        let s = try r.scores(test)
        for (a, b) in zip(s, ref.scores) {
            for (x, y) in zip(a, b) { #expect(abs(Double(x) - y) < 1e-3 * max(1, abs(y))) }
        }
        let routes = try r.route(test).map { $0 ?? -1 }
        #expect(routes == ref.routes)
        #expect(routes.suffix(2) == [-1, -1])
        #expect(try r.weights(test).last == [0, 0, 0])
    }

    @Test("a router file round-trips exactly")
    func roundTrip() throws {
        let r = try Self.fitted()
        let dir = try temporaryFolder()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("r.tsr").path
        try RouterFile.write(r, to: path)
        #expect(RouterFile.isRouterFile(path))
        #expect(try RouterFile.read(path) == r)
    }

    @Test("every single-bit flip of a router file is a typed error naming the file")
    func everyBit() throws {
        let bytes = RouterFile.encode(try Self.fitted())
        _ = try PackCorruptionTests.flipEveryBit(bytes, file: "flip.tsr") { b, f throws(SwitchError) in
            _ = try RouterFile.decode(b, file: f)
        }
        for cut in [0, 5, 16, 30, bytes.count / 2, bytes.count - 1] {
            let err = switchError { () throws(SwitchError) in
                _ = try RouterFile.decode(Array(bytes.prefix(cut)), file: "cut.tsr")
            }
            #expect(err != nil && err?.message.hasPrefix("cut.tsr: ") == true)
        }
    }

    @Test("limits on tasks and dimension accept the exact value and refuse one less, naming the field")
    func limits() throws {
        let bytes = RouterFile.encode(try Self.fitted())
        _ = try RouterFile.decode(bytes, file: "l.tsr", limits: .init(maxTasks: 3, maxDimension: 8))
        let t = switchError { () throws(SwitchError) in
            _ = try RouterFile.decode(bytes, file: "l.tsr", limits: .init(maxTasks: 2))
        }
        #expect(t?.code == .limitExceeded && t?.message.contains("META.tasks") == true)
        let d = switchError { () throws(SwitchError) in
            _ = try RouterFile.decode(bytes, file: "l.tsr", limits: .init(maxDimension: 7))
        }
        #expect(d?.code == .limitExceeded && d?.message.contains("META.dimension") == true)
    }

    /// The fixture's router as if its 8 features were two layers' 4 (the numbers do not care).
    static func layered() throws -> LDARouter {
        let train = try QuerySet(path: Fixture.url("router/train.safetensors").path, requireLabels: true)
        return try LDARouter.fit(train, shrinkage: try reference().shrinkage, layers: [2, 5])
    }

    @Test("a router on layer features is written as version 2 with its layers; one without stays version 1")
    func layeredRoundTrip() throws {
        let r = try Self.layered()
        #expect(r.layers == [2, 5] && r.featureLayers == [2, 5])
        let bytes = RouterFile.encode(r)
        #expect(bytes[8] == 2)
        let back = try RouterFile.decode(bytes, file: "l.tsr")
        #expect(back == r && back.layers == [2, 5])
        // The layers change nothing else of the fit.
        let plain = try Self.fitted()
        #expect(
            r.weights == plain.weights && r.choleskyFactor == plain.choleskyFactor
                && r.oodThreshold == plain.oodThreshold)
        #expect(RouterFile.encode(plain)[8] == 1 && plain.featureLayers.isEmpty)
        _ = try PackCorruptionTests.flipEveryBit(bytes, file: "flip.tsr") { b, f throws(SwitchError) in
            _ = try RouterFile.decode(b, file: f)
        }
    }

    @Test("a layered file relabelled version 1, too many layers, or layers not dividing the dimension are refused")
    func layeredRefusals() throws {
        var bytes = RouterFile.encode(try Self.layered())
        _ = try RouterFile.decode(bytes, file: "l.tsr", limits: .init(maxLayers: 2))
        let many = switchError { () throws(SwitchError) in
            _ = try RouterFile.decode(bytes, file: "l.tsr", limits: .init(maxLayers: 1))
        }
        #expect(many?.code == .limitExceeded && many?.message.contains("META.layers") == true)
        bytes[8] = 1  // the preamble has no checksum: what an old writer's version with a new META would be
        let old = switchError { () throws(SwitchError) in _ = try RouterFile.decode(bytes, file: "l.tsr") }
        #expect(old?.code == .corruptPack && old?.message.hasPrefix("l.tsr: ") == true)
        let train = try QuerySet(path: Fixture.url("router/train.safetensors").path, requireLabels: true)
        for bad in [[0, 1, 2], [3, 1], [-1, 2], [4, 4]] {
            let err = switchError { () throws(SwitchError) in _ = try LDARouter.fit(train, layers: bad) }
            #expect(err?.code == .invalidArgument && err?.message.contains("\(bad)") == true, "\(bad)")
        }
    }

    @Test("layer lists parse as ranges and commas; anything else is refused naming the text")
    func layerLists() throws {
        #expect(try LDARouter.layers(parsing: "3-6") == [3, 4, 5, 6])
        #expect(try LDARouter.layers(parsing: "1,3,6") == [1, 3, 6])
        #expect(try LDARouter.layers(parsing: "0,2-3,6") == [0, 2, 3, 6])
        #expect(try LDARouter.layers(parsing: "4") == [4])
        #expect(try LDARouter.layers(parsing: "final") == [])
        for bad in ["", "3-", "-1", "6-3", "3,3", "4,2", "1-2-3", "a", "3,,4", "2000", "Final", "final,3"] {
            let err = switchError { () throws(SwitchError) in _ = try LDARouter.layers(parsing: bad) }
            #expect(err?.code == .invalidArgument && err?.message.contains("'\(bad)'") == true, "\(bad)")
        }
    }

    @Test("a router fitted on another base's features is refused")
    func otherBase() throws {
        let r = try Self.fitted()
        try r.check(base: BaseFingerprint(value: 0x1234_5678_9abc_def0), file: "r.tsr")
        let err = switchError { () throws(SwitchError) in try r.check(base: BaseFingerprint(value: 1), file: "r.tsr") }
        #expect(err?.code == .wrongBase && err?.message.hasPrefix("r.tsr: ") == true)
    }
}
