import Foundation

/// A number of bytes as written on a command line or in a config: a plain number of bytes, or a number with a unit.
///
/// The units follow mergekit's `--out-shard-size` (`parse_kmb`): `K`, `M` and `B` are 10³, 10⁶ and 10⁹, so `5B` is
/// five billion bytes, not five bytes. `KB`, `MB`, `GB` are the same decimal units (Hugging Face's
/// `max_shard_size`), `KiB`, `MiB`, `GiB` the binary ones. Units are case-insensitive; the number may have a
/// fraction when a unit follows (`1.5GB`), and the result is rounded down to whole bytes.
public struct ByteSize: Sendable, Hashable, Comparable, CustomStringConvertible {
    public let bytes: Int

    public init(bytes: Int) {
        precondition(bytes >= 0, "a byte size is never negative")
        self.bytes = bytes
    }

    /// Longest suffixes first: `5KB` and `5GiB` end in `B` too, which alone means billions.
    private static let units: [(suffix: String, scale: Int)] = [
        ("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30),
        ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000),
        ("K", 1_000), ("M", 1_000_000), ("B", 1_000_000_000),
    ]

    /// What `init(parsing:)` accepts, for error messages.
    public static let syntax =
        "a number of bytes, or a number with K, M, B (10³, 10⁶, 10⁹ as mergekit), KB, MB, GB or KiB, MiB, GiB"

    public init(parsing text: String) throws(ValueSyntaxError) {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        var number = Substring(t)
        var scale = 1
        for u in Self.units where t.hasSuffix(u.suffix) {
            number = t.dropLast(u.suffix.count)
            scale = u.scale
            break
        }
        number = Substring(number.trimmingCharacters(in: .whitespaces))
        if number.hasPrefix("-") {
            throw ValueSyntaxError("'\(text)' is negative; a size is \(Self.syntax).")
        }
        let digits = number.filter { $0 != "." }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
            number.filter({ $0 == "." }).count <= 1,
            scale > 1 || !number.contains(".")
        else {
            throw ValueSyntaxError("'\(text)' is not a size; a size is \(Self.syntax).")
        }
        if scale == 1 {
            guard let n = Int(number) else { throw ValueSyntaxError("'\(text)' is too large a size.") }
            self.init(bytes: n)
            return
        }
        guard let v = Double(number), (v * Double(scale)).isFinite, v * Double(scale) < 9.0e18 else {
            throw ValueSyntaxError("'\(text)' is too large a size.")
        }
        self.init(bytes: Int((v * Double(scale)).rounded(.down)))
    }

    /// The shortest form that parses back to the same count: `5GB`, `2GiB`, `500MB`, or plain bytes.
    public var description: String {
        for (suffix, scale) in [
            ("GB", 1_000_000_000), ("GiB", 1 << 30), ("MB", 1_000_000), ("MiB", 1 << 20), ("KB", 1_000),
            ("KiB", 1 << 10),
        ]
        where bytes > 0 && bytes % scale == 0 {
            return "\(bytes / scale)\(suffix)"
        }
        return "\(bytes)"
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }
}
