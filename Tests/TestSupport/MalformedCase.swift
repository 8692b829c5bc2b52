import CheckpointIO
import Testing

/// One file of a malformed corpus, as its `expected.json` describes it: the error code opening it must fail with
/// and the tensor or key the message must name.
public struct MalformedCase: CustomTestStringConvertible, Sendable {
    public let name: String
    public let code: String
    public let tensor: String?
    public let key: String?
    public var testDescription: String { "\(name) -> \(code)" }

    /// The cases of one `expected.json` group (file name → `{"code", "tensor", "key"}`), sorted by name; a missing
    /// code reads as "?", which no error has.
    public static func cases(_ entries: [String: [String: Any]]) -> [MalformedCase] {
        entries.keys.sorted().map { name in
            let e = entries[name]
            return MalformedCase(
                name: name, code: e?["code"] as? String ?? "?", tensor: e?["tensor"] as? String,
                key: e?["key"] as? String)
        }
    }

    /// Checks that every case promises a code `Code` defines.
    public static func expectKnownCodes<Code: ErrorCode>(
        _ cases: [MalformedCase], _: Code.Type, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for c in cases {
            #expect(Code(rawValue: c.code) != nil, "\(c.name): unknown code \(c.code)", sourceLocation: sourceLocation)
        }
    }

    /// Checks the error opening this case's file raised: its code, and a message naming `path` (the file or
    /// folder opened) and the case's tensor and key, quoted.
    public func expectRefusal<E: CodedError>(
        _ error: E?, naming path: String, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(
            error?.code.rawValue == code, "\(name): \(error?.message ?? "accepted")", sourceLocation: sourceLocation)
        guard let error else { return }
        #expect(
            error.message.contains(path), "message does not name the file: \(error.message)",
            sourceLocation: sourceLocation)
        for named in [tensor, key].compactMap({ $0 }) {
            #expect(
                error.message.contains("'\(named)'"), "message does not name '\(named)': \(error.message)",
                sourceLocation: sourceLocation)
        }
    }
}
