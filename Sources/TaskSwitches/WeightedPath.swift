import CheckpointIO

/// A pack on a command line with its mixing weight: `a.tsw` (weight 1), `a.tsw:0.5`, `c.tsw:-1`.
///
/// A suffix after the last `:` that is not a number belongs to the path (`dir:x/a.tsw` is a path); a number that is
/// not finite (`a.tsw:inf`, `a.tsw:nan`) is refused.
public struct WeightedPath: Sendable, Equatable {
    public let path: String
    public let weight: Float

    public init(path: String, weight: Float = 1) {
        self.path = path
        self.weight = weight
    }

    public init(parsing text: String) throws(ValueSyntaxError) {
        var path = text
        var weight: Float = 1
        if let colon = text.lastIndex(of: ":"), let w = Float(text[text.index(after: colon)...]) {
            guard w.isFinite else {
                throw ValueSyntaxError("The weight of '\(text)' must be a finite number (PATH:WEIGHT, e.g. a.tsw:0.5).")
            }
            path = String(text[..<colon])
            weight = w
        }
        guard !path.isEmpty else { throw ValueSyntaxError("'\(text)' names no file; give PATH or PATH:WEIGHT.") }
        self.init(path: path, weight: weight)
    }
}
