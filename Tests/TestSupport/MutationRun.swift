import CheckpointIO
import Testing

/// A deterministic mutation fuzzer for `swift test` (libFuzzer runs the same parsers in `scripts/fuzz`).
public enum MutationRun {
    /// Parses `count` mutants of the `valid` inputs, taken in turn: each gets one to three edits at random
    /// positions by `edit(&bytes, position, &rng)`. A mutant either parses, and `accepted` checks what came out, or
    /// throws an `E` whose message names the input, which `parse` must call "mutant".
    ///
    /// - Returns: how many mutants parsed, and the codes of the refusals (so a test can ask that many checks were
    ///   reached).
    public static func run<E: CodedError, T>(
        _ valid: [[UInt8]], count: Int, seed: UInt64, edit: (inout [UInt8], Int, inout SplitMix) -> Void,
        parse: ([UInt8]) throws(E) -> T, accepted: (T, [UInt8]) -> Void,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> (accepted: Int, codes: Set<E.Code>) {
        var rng = SplitMix(seed)
        var parsed = 0
        var codes = Set<E.Code>()
        for i in 0..<count {
            var b = valid[i % valid.count]
            for _ in 0..<(1 + Int(rng.next() % 3)) {
                let pos = Int(rng.next() % UInt64(max(1, b.count)))
                edit(&b, pos, &rng)
            }
            do throws(E) {
                let result = try parse(b)
                parsed += 1
                accepted(result, b)
            } catch {
                codes.insert(error.code)
                #expect(error.message.contains("mutant"), sourceLocation: sourceLocation)
            }
        }
        return (parsed, codes)
    }

    /// Runs `parse` over the bytes of `b`, passing its typed error through.
    public static func withBytes<E: Error, T>(
        _ b: [UInt8], _ parse: (UnsafeRawBufferPointer) throws(E) -> T
    ) throws(E) -> T {
        var result: Result<T, E>?
        b.withUnsafeBytes { raw in result = Result { () throws(E) -> T in try parse(raw) } }
        guard let result else { preconditionFailure("withUnsafeBytes always runs its closure") }
        return try result.get()
    }
}
