import Foundation
import TestSupport
import Testing

@testable import TaskSwitches

/// The lexical evidence beside the LDA router: the n-gram hash, the naive Bayes fit and its held-out tuning, and
/// router file version 3. (The NB against scikit-learn: interop/test_lexical_routing.py.)
struct LexicalRouterTests {
    /// FNV-1a 64 of a string's UTF-8 bytes, written out plainly (the model hashes incrementally).
    static func fnv1a(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 {
            h ^= UInt64(b)
            h = h &* 0x100_0000_01b3
        }
        return h
    }

    /// Every 1…4-gram of the framed text, by position then n, hashed whole.
    static func plainNgrams(_ text: String, buckets: Int) -> [UInt32] {
        let scalars = ["\u{02}"] + text.unicodeScalars.map { String($0) } + ["\u{03}"]
        var out: [UInt32] = []
        for i in scalars.indices {
            for n in 1...4 where i + n <= scalars.count {
                out.append(UInt32(fnv1a(scalars[i..<(i + n)].joined()) % UInt64(buckets)))
            }
        }
        return out
    }

    @Test(
        "n-grams are FNV-1a of each framed run of 1-4 scalars' UTF-8 bytes, case kept",
        arguments: ["", "a", "Grüße 日本", "ab\u{1F600}c"])
    func ngrams(text: String) {
        let got = LexicalModel.ngrams(text, buckets: 1 << 18, orders: 1...4)
        #expect(got == Self.plainNgrams(text, buckets: 1 << 18))
        let l = text.unicodeScalars.count + 2
        #expect(got.count == (1...4).reduce(0) { $0 + max(0, l - $1 + 1) })
        // FNV-1a's published value for "a" (offset basis and prime as specified).
        #expect(Self.fnv1a("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(
            LexicalModel.ngrams("A", buckets: 1 << 18, orders: 1...1)
                != LexicalModel.ngrams("a", buckets: 1 << 18, orders: 1...1))
    }

    /// Texts that name their task by their letters: alpha, beta, gamma rows (the fixture's 40 per task).
    static func texts(_ labels: [Int]) -> [String] {
        let words = [["ant", "apple", "axe"], ["bee", "bob", "ebb"], ["cow", "coco", "cyan"]]
        return labels.enumerated().map { i, l in "\(words[l][i % 3]) \(words[l][(i + 1) % 3])" }
    }

    static func train() throws -> QuerySet {
        try QuerySet(path: Fixture.url("router/train.safetensors").path, requireLabels: true)
    }

    @Test("the fit's log-likelihoods are Lidstone-smoothed counts over every bucket; tables are sparse")
    func fitCounts() throws {
        let texts = ["ab", "ab", "ba"]
        let m = LexicalModel.fit(
            texts: texts, labels: [0, 0, 1], tasks: 2, alpha: 0.5, weight: 1, power: 0, buckets: 64)
        var counts = [[Int]](repeating: [Int](repeating: 0, count: 64), count: 2)
        for (t, l) in zip(texts, [0, 0, 1]) { for g in Self.plainNgrams(t, buckets: 64) { counts[l][Int(g)] += 1 } }
        for k in 0..<2 {
            let total = Double(counts[k].reduce(0, +))
            let logp = counts[k].map { log(Double($0) + 0.5) - log(total + 0.5 * 64) }
            let expected = Self.plainNgrams("abba", buckets: 64).reduce(0.0) { $0 + logp[Int($1)] }
            let got = m.logLikelihoods("abba")[k]
            #expect(abs(got - expected) < 1e-5 * abs(expected), "task \(k)")
            #expect(m.tables[k].buckets.count == counts[k].filter { $0 > 0 }.count)
        }
        let n = Double(Self.plainNgrams("abba", buckets: 64).count)
        let e = m.evidence("abba")
        #expect(e == m.logLikelihoods("abba"))  // w 1, p 0
        let damped = LexicalModel(
            buckets: 64, minOrder: 1, maxOrder: 4, alpha: 0.5, weight: 3, power: 1, tables: m.tables)
        #expect(abs(damped.evidence("abba")[0] - 3 * e[0] / n) < 1e-9)
    }

    @Test("texts that name their task make the tuned router carry lexical evidence; uninformative texts do not")
    func tuning() throws {
        let train = try Self.train()
        let labels = try #require(train.labels)
        let (r, t) = try LDARouter.fit(train, texts: Self.texts(labels), shrinkage: 0.1)
        let tuning = try #require(t)
        #expect(tuning.heldOut == 24)
        let lexical = try #require(r.lexical)
        #expect(tuning.lexicalRouted == 1 && tuning.lexicalRouted > tuning.ldaRouted)
        #expect(lexical.weight == tuning.weight && lexical.weight > 0 && lexical.tables.count == 3)
        // The LDA part is the plain fit's.
        let plain = try LDARouter.fit(train, shrinkage: 0.1)
        #expect(r.with(lexical: nil) == plain)
        let same = try LDARouter.fit(train, texts: Array(repeating: "same text", count: train.count), shrinkage: 0.1)
        #expect(same.router.lexical == nil && same.tuning?.weight == 0 && same.router == plain)
        let fixed = try LDARouter.fit(
            train, texts: Self.texts(labels), knobs: .init(alpha: 0.2, weight: 2, power: 0.5), shrinkage: 0.1)
        #expect(fixed.router.lexical?.alpha == 0.2 && fixed.router.lexical?.weight == 2)
        #expect(fixed.router.lexical?.power == 0.5)
        let bad = switchError { () throws(SwitchError) in _ = try LDARouter.fit(train, texts: ["x"]) }
        #expect(bad?.code == .invalidArgument)
    }

    @Test("with texts the lexical evidence decides the task; the OOD check stays on the LDA score")
    func routing() throws {
        let train = try Self.train()
        let r = try LDARouter.fit(
            train, texts: Self.texts(try #require(train.labels)), knobs: .init(alpha: 0.1, weight: 64, power: 0),
            shrinkage: 0.1
        ).router
        let test = try QuerySet(path: Fixture.url("router/test.safetensors").path, requireLabels: true)
        let plain = try r.route(test)
        #expect(try r.route(test, texts: nil) == plain)
        #expect(plain.suffix(2) == [nil, nil])
        // Every row given a gamma text: the in-distribution rows go to gamma, the far ones still to the base.
        let gamma = try r.route(test, texts: Array(repeating: "cow cyan coco", count: test.count))
        #expect(gamma.dropLast(2).allSatisfy { $0 == 2 } && gamma.suffix(2) == [nil, nil])
        #expect(plain.dropLast(2).contains { $0 != 2 })
        #expect(try r.weights(test, texts: Array(repeating: "ant axe", count: test.count)).first == [1, 0, 0])
        let noLexical = try LDARouter.fit(train, shrinkage: 0.1)
        #expect(r.usesTexts && !noLexical.usesTexts)
        let wrong = switchError { () throws(SwitchError) in _ = try r.route(test, texts: ["ant"]) }
        #expect(wrong?.code == .invalidArgument)
    }

    static func lexicalRouter(layers: [Int] = []) throws -> LDARouter {
        let train = try Self.train()
        return try LDARouter.fit(
            train, texts: Self.texts(try #require(train.labels)), knobs: .init(alpha: 0.1, weight: 4, power: 1),
            shrinkage: 0.1, layers: layers
        ).router
    }

    @Test("a router with lexical evidence is version 3 and round-trips exactly, with or without layers")
    func roundTrip() throws {
        for layers in [[], [2, 5]] {
            let r = try Self.lexicalRouter(layers: layers)
            let bytes = RouterFile.encode(r)
            #expect(bytes[8] == 3)
            let back = try RouterFile.decode(bytes, file: "x.tsr")
            #expect(back == r && back.layers == layers && back.lexical == r.lexical)
            let dir = try temporaryFolder()
            defer { try? FileManager.default.removeItem(at: dir) }
            let path = dir.appendingPathComponent("x.tsr").path
            try RouterFile.write(r, to: path)
            #expect(try RouterFile.read(path) == r)
            // Without the lexical part the same router is the version 1 or 2 file it was.
            #expect(RouterFile.encode(r.with(lexical: nil))[8] == (layers.isEmpty ? 1 : 2))
        }
    }

    @Test("every bit flip and cut of a version 3 file is a typed error naming the file")
    func corruption() throws {
        let bytes = RouterFile.encode(try Self.lexicalRouter())
        _ = try PackCorruptionTests.flipEveryBit(bytes, file: "flip.tsr") { b, f throws(SwitchError) in
            _ = try RouterFile.decode(b, file: f)
        }
        let cuts = [0, 16, bytes.count / 3, bytes.count / 2, bytes.count - 20, bytes.count - 1]
        for cut in cuts {
            let err = switchError { () throws(SwitchError) in
                _ = try RouterFile.decode(Array(bytes.prefix(cut)), file: "cut.tsr")
            }
            #expect(err?.code == .truncatedPack || err?.code == .notAPack, "cut at \(cut)")
            #expect(err?.message.hasPrefix("cut.tsr: ") == true)
        }
    }

    /// The file's sections with one payload replaced and its checksum recomputed (damage the CRC cannot see).
    static func replacing(_ tag: String, in bytes: [UInt8], _ change: (inout [UInt8]) -> Void) -> [UInt8] {
        var out = Array(bytes.prefix(16))
        var i = 16
        while i < bytes.count {
            let t = String(decoding: bytes[i..<(i + 4)], as: UTF8.self)
            let n = Int(bytes[(i + 4)..<(i + 12)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            var payload = Array(bytes[(i + 16)..<(i + 16 + n)])
            if t == tag { change(&payload) }
            var w = ByteWriter()
            w.raw(Array(t.utf8))
            w.u64(UInt64(payload.count))
            w.u32(CRC32C.checksum(payload))
            w.raw(payload)
            out += w.bytes
            i += 16 + n
        }
        return out
    }

    @Test("bad lexical tables, META fields and limits are refused with the field named")
    func refusals() throws {
        let r = try Self.lexicalRouter()
        let bytes = RouterFile.encode(r)
        func err(_ b: [UInt8], _ limits: RouterFile.Limits = .standard) -> SwitchError? {
            switchError { () throws(SwitchError) in _ = try RouterFile.decode(b, file: "v3.tsr", limits: limits) }
        }
        let entries = r.lexical?.tables.reduce(0) { $0 + $1.buckets.count } ?? 0
        #expect(err(bytes, .init(maxLexicalEntries: entries)) == nil)
        let many = err(bytes, .init(maxLexicalEntries: entries - 1))
        #expect(many?.code == .limitExceeded && many?.message.contains("LEXI") == true)
        let buckets = err(bytes, .init(maxLexicalBuckets: (1 << 18) - 1))
        #expect(buckets?.code == .limitExceeded && buckets?.message.contains("META.lexical.buckets") == true)
        let order = err(bytes, .init(maxLexicalOrder: 3))
        #expect(order?.code == .limitExceeded && order?.message.contains("max_order") == true)
        // Swap the first two entries of task 0: buckets no longer ascending.
        let swapped = Self.replacing("LEXI", in: bytes) { p in
            let first = Array(p[8..<16])
            p.replaceSubrange(8..<16, with: p[16..<24])
            p.replaceSubrange(16..<24, with: first)
        }
        let e1 = err(swapped)
        #expect(e1?.code == .corruptPack && e1?.message.contains("not ascending") == true)
        // A positive log-probability; a count running past the section; a trailing byte.
        let positive = Self.replacing("LEXI", in: bytes) { p in p.replaceSubrange(12..<16, with: [0, 0, 0x80, 0x3F]) }
        #expect(err(positive)?.message.contains("log-probability") == true)
        let long = Self.replacing("LEXI", in: bytes) { p in p.replaceSubrange(0..<4, with: [0xFF, 0xFF, 0, 0]) }
        #expect(err(long)?.code == .corruptPack && err(long)?.message.contains("LEXI") == true)
        let trailing = Self.replacing("LEXI", in: bytes) { p in p.append(0) }
        #expect(err(trailing)?.message.contains("after the last table") == true)
        // META: another hash, α 0; the lexical object in a version 2 file.
        for (from, to) in [("fnv1a64-utf8", "fnv1a32-utf8"), ("\"alpha\":0.1", "\"alpha\":0.0")] {
            let b = Self.replacing("META", in: bytes) { p in
                p = Array(String(decoding: p, as: UTF8.self).replacingOccurrences(of: from, with: to).utf8)
            }
            #expect(b != bytes, "\(from)")
            let e = err(b)
            #expect(e?.code == .corruptPack && e?.message.contains("META.lexical") == true, "\(from)")
        }
        var two = bytes
        two[8] = 2
        #expect(err(two)?.code == .corruptPack)
        var four = bytes
        four[8] = 4
        #expect(err(four)?.code == .unsupportedVersion)
    }
}
