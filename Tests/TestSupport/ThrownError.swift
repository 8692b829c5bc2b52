import CheckpointIO
import Testing

/// Runs `body` and returns the `E` it throws, or nil when it succeeds; any other error is recorded as an issue at
/// the caller, so a test expecting one error type cannot pass on another.
public func thrownError<E: CodedError>(
    _: E.Type, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
) -> E? {
    do {
        try body()
        return nil
    } catch let error as E {
        return error
    } catch {
        Issue.record("expected a \(E.self), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}
