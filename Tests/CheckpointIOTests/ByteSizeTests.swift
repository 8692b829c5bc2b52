import Testing

@testable import CheckpointIO

/// `ByteSize`: the one parser of `convert --max-shard-size` and `merge --out-shard-size`, with mergekit's units.
struct ByteSizeTests {
    static func parse(_ s: String) throws -> Int { try ByteSize(parsing: s).bytes }

    @Test("K, M and B are 10³, 10⁶ and 10⁹ as in mergekit: 5B is five billion bytes")
    func mergekitUnits() throws {
        #expect(try Self.parse("5B") == 5_000_000_000)
        #expect(try Self.parse("500M") == 500_000_000)
        #expect(try Self.parse("50K") == 50_000)
        #expect(try Self.parse("5b") == 5_000_000_000)
    }

    @Test("KB, MB, GB are decimal, KiB, MiB, GiB binary, and a plain number is bytes")
    func decimalAndBinaryUnits() throws {
        #expect(try Self.parse("4KB") == 4_000)
        #expect(try Self.parse("30MB") == 30_000_000)
        #expect(try Self.parse("5GB") == 5_000_000_000)
        #expect(try Self.parse("2KiB") == 2_048)
        #expect(try Self.parse("3MiB") == 3 << 20)
        #expect(try Self.parse("2gib") == 2 << 30)
        #expect(try Self.parse("2000000") == 2_000_000)
        #expect(try Self.parse(" 1.5GB ") == 1_500_000_000)
        #expect(try Self.parse("0") == 0)
    }

    @Test("negative, empty, unit-only, fractional-byte, unknown-unit and overflowing sizes are refused")
    func refused() {
        for bad in [
            "-5GB", "-1", "", "GB", "1.5", "5X", "5TB", "1e3", "nan", "inf", "+5", "1.2.3K", "99999999999GB",
            "99999999999999999999",
        ] {
            #expect(throws: ValueSyntaxError.self, "\(bad)") { _ = try ByteSize(parsing: bad) }
        }
        #expect(throws: ValueSyntaxError.self) { _ = try ByteSize(parsing: "-5GB") }
        do {
            _ = try ByteSize(parsing: "-5GB")
        } catch {
            #expect(error.message.contains("negative"))
        }
    }

    @Test("the description is the shortest form that parses back to the same count")
    func descriptionRoundTrips() throws {
        for n in [0, 1, 1_000, 1_024, 4_000, 5_000_000_000, 2 << 30, 123_456_789] {
            let s = ByteSize(bytes: n)
            #expect(try Self.parse(s.description) == n, "\(s)")
        }
        #expect(ByteSize(bytes: 5_000_000_000).description == "5GB")
        #expect(ByteSize(bytes: 2 << 30).description == "2GiB")
    }
}
