import Analysis
import ArgumentParser
import CheckpointIO
import Evaluation
import TaskSwitches
import TensorKernels

// Every option value is typed and parsed once, here: ArgumentParser lists the choices in `--help` and rejects
// anything else with a usage error (exit code 64) before `run()`.

/// Routing choices parse straight from their raw names.
extension AutoSwitchRouter.Mode: ExpressibleByArgument {}
extension AutoSwitchRouter.Distance: ExpressibleByArgument {}
extension KeptValues.Code: ExpressibleByArgument {}
extension PDiscard.TieRule: ExpressibleByArgument {}
extension DropSweep.Strategy: ExpressibleByArgument {}
extension DropSweep.Scale: ExpressibleByArgument {}
extension SwitchedEncoder.MixedBatching: ExpressibleByArgument {}

extension SwitchPack.Kind: ExpressibleByArgument {
    /// `random` is accepted for `random-mask`.
    public init?(argument: String) {
        self.init(rawValue: argument == "random" ? Self.randomMask.rawValue : argument)
    }
}

/// A float dtype by its usual names (`f32`, `fp16`, `bfloat16`, …); commands narrow the set in `validate()`.
extension DType: ExpressibleByArgument {
    public init?(argument: String) {
        guard let d = DType(userName: argument), d.isConvertibleFloat else { return nil }
        self = d
    }

    public static var allValueStrings: [String] { ["f32", "f16", "bf16", "f64"] }

    public var defaultValueDescription: String { rawValue.lowercased() }
}

/// Transforms for `@Option(transform:)` / `@Argument(transform:)`: the library parser's message becomes the
/// usage error.
enum Parse {
    static func byteSize(_ text: String) throws -> ByteSize {
        do { return try ByteSize(parsing: text) } catch { throw ValidationError(error.message) }
    }

    static func weightedPath(_ text: String) throws -> WeightedPath {
        do { return try WeightedPath(parsing: text) } catch { throw ValidationError(error.message) }
    }

    static func taskFile(_ text: String) throws -> TaskFile {
        do { return try TaskFile(parsing: text) } catch { throw ValidationError(error.message) }
    }

    static func layers(_ text: String) throws -> [Int] {
        do { return try LDARouter.layers(parsing: text) } catch { throw ValidationError(error.message) }
    }

    /// A comma-separated list of values, each parsed by `value` (`nil`: not one of `expected`).
    static func list<T>(_ text: String, expected: String, _ value: (String) -> T?) throws -> [T] {
        let items = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !items.isEmpty else {
            throw ValidationError("'\(text)' lists nothing; give \(expected), comma-separated.")
        }
        return try items.map {
            guard let v = value($0) else { throw ValidationError("'\($0)' is not \(expected).") }
            return v
        }
    }
}
