import CheckpointIO
import TensorKernels

// # Writing a merge method
//
// A merge method is a type conforming to `MergeMethod`, in one file of `Sources/MergeEngine/Methods/`, listed once
// in `MergeMethodRegistry.all`. It is a pure function of one tensor of every input model and its resolved
// parameters; the engine does everything else (config parsing, parameter precedence and gradients, loading and
// converting inputs to `Float`, shape checks, output dtype, writing, progress, seeding).
//
//     public enum MyMethod: MergeMethod {
//         public static let name = "my_method"                 // the `merge_method:` users write
//         public static let basePolicy = BasePolicy.required   // the engine enforces it
//         public static let parameters: [ParameterSpec] = [
//             .number("weight", scope: .nonBase),              // required (no default), one value per non-base model
//             .number("density", scope: .nonBase, default: 1),
//             .bool("normalize", default: true),               // shared by all models
//         ]
//         public static func merge(_ c: TensorMergeContext, into out: UnsafeMutableBufferPointer<Float>) throws(MergeError) {
//             guard let base = c.base else { return }          // .required: never nil here
//             // out = base + Σ wᵢ (xᵢ − base)
//             _ = out.initialize(fromContentsOf: base.values)
//             for m in c.nonBase {
//                 let w = Float(m.number("weight"))
//                 for i in 0..<out.count { out[i] += w * (m.values[i] - base.values[i]) }  // use TensorKernels for speed
//             }
//         }
//     }
//
// Rules:
// - Read inputs from `context.inputs` (config order; the base, when the config names one, has `isBase == true`),
//   write every element of `output` (same element count as each input; it starts uninitialised garbage).
// - Parameters are already resolved for this tensor (precedence slice-source > slice > model > global, gradients
//   interpolated at this tensor's layer, filters applied); unknown keys were rejected before merging started, so
//   `number(_:)` / `bool(_:)` on a declared parameter never fail.
// - Randomised methods draw from `context.makeRandom()`: a generator seeded from `--random-seed`, the tensor name
//   and a stream number, so results do not depend on tensor order or thread count.
// - Throw `MergeError` (code `.numerical` / `.invalidInputs`) with a full sentence naming `context.tensorName` for
//   bad input; never trap on data.
// - Hot loops: use the SIMD/multi-core kernels in TensorKernels (Elementwise, Selection, MergeKernels) or write
//   SIMD8 loops over the buffers with `Parallel.forEachChunk`.
// - Scratch memory: allocate `UnsafeMutableBufferPointer<Float>` and deallocate with `defer`; keep it to about one
//   or two tensors (the engine budgets (inputs + 2) × the tensor).

/// How a method uses `base_model`.
public enum BasePolicy: String, Sendable {
    /// A base is needed (task-vector methods); its absence is a config error.
    case required
    /// Used when given (e.g. nuslerp on task vectors), merged directly otherwise.
    case optional
    /// The method treats the base like any other model (linear, passthrough).
    case ignored
}

/// Which models a parameter is given for.
public enum ParameterScope: String, Sendable {
    /// One value for the whole merge (`normalize`, `lambda`, `t`); read with `context.number(_:)`.
    case shared
    /// One value per input, base included (`weight` of linear); read with `input.number(_:)`.
    case input
    /// One value per non-base input (`weight`, `density` of TIES); read with `input.number(_:)`.
    case nonBase
}

/// A resolved parameter value.
public enum ParameterValue: Sendable, Equatable, CustomStringConvertible {
    case number(Double)
    case bool(Bool)

    /// Numbers read as numbers and booleans as 0/1, as mergekit's pydantic coercion does.
    public var number: Double {
        switch self {
        case .number(let d): d
        case .bool(let b): b ? 1 : 0
        }
    }

    /// Booleans read as booleans and numbers as `!= 0`.
    public var bool: Bool {
        switch self {
        case .number(let d): d != 0
        case .bool(let b): b
        }
    }

    public var description: String {
        switch self {
        case .number(let d): d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .bool(let b): String(b)
        }
    }
}

/// A parameter a method takes: its name as written in YAML, scope, kind and default (nil = required).
public struct ParameterSpec: Sendable {
    public enum Kind: String, Sendable { case number, bool }

    public let name: String
    public let scope: ParameterScope
    public let kind: Kind
    public let defaultValue: ParameterValue?

    public init(name: String, scope: ParameterScope, kind: Kind, defaultValue: ParameterValue?) {
        self.name = name
        self.scope = scope
        self.kind = kind
        self.defaultValue = defaultValue
    }

    /// A numeric parameter; `default: nil` makes it required.
    public static func number(_ name: String, scope: ParameterScope = .shared, default d: Double? = nil)
        -> ParameterSpec
    {
        ParameterSpec(name: name, scope: scope, kind: .number, defaultValue: d.map { .number($0) })
    }

    /// A boolean parameter; `default: nil` makes it required.
    public static func bool(_ name: String, scope: ParameterScope = .shared, default d: Bool? = nil) -> ParameterSpec {
        ParameterSpec(name: name, scope: scope, kind: .bool, defaultValue: d.map { .bool($0) })
    }
}

/// One input model's tensor, as `Float`, with its resolved per-input parameters.
public struct MergeInput {
    /// The model as written in the config (path, Hugging Face id or intermediate name).
    public let model: String
    /// Whether this is `base_model`.
    public let isBase: Bool
    /// The tensor's elements, row-major, converted to `Float`. Read-only; valid during `merge` only.
    public let values: UnsafeBufferPointer<Float>
    /// Per-input (`.input` / `.nonBase`) parameters, resolved for this tensor.
    public let parameters: [String: ParameterValue]

    public init(model: String, isBase: Bool, values: UnsafeBufferPointer<Float>, parameters: [String: ParameterValue]) {
        self.model = model
        self.isBase = isBase
        self.values = values
        self.parameters = parameters
    }

    /// A declared numeric parameter's value (0 if undeclared, which the config checks make impossible).
    public func number(_ name: String) -> Double { parameters[name]?.number ?? 0 }

    public func bool(_ name: String) -> Bool { parameters[name]?.bool ?? false }
}

/// Everything a method sees for one output tensor.
public struct TensorMergeContext {
    /// The output tensor's name (for messages and filters).
    public let tensorName: String
    /// The shape shared by all inputs and the output.
    public let shape: [Int]
    /// Inputs in config order; at most one has `isBase`.
    public let inputs: [MergeInput]
    /// Shared parameters, resolved for this tensor.
    public let parameters: [String: ParameterValue]
    /// The merge's `--random-seed` (0 when not given).
    public let seed: UInt64

    public init(
        tensorName: String, shape: [Int], inputs: [MergeInput], parameters: [String: ParameterValue], seed: UInt64
    ) {
        self.tensorName = tensorName
        self.shape = shape
        self.inputs = inputs
        self.parameters = parameters
        self.seed = seed
    }

    public var elementCount: Int { shape.reduce(1, *) }
    public var base: MergeInput? { inputs.first { $0.isBase } }
    public var nonBase: [MergeInput] { inputs.filter { !$0.isBase } }

    public func number(_ name: String) -> Double { parameters[name]?.number ?? 0 }
    public func bool(_ name: String) -> Bool { parameters[name]?.bool ?? false }

    /// A deterministic generator for this tensor: the same seed, tensor and stream give the same numbers on any
    /// machine, thread count or tensor order. Use one stream per input model (`stream: index`).
    public func makeRandom(stream: Int = 0) -> SplitMix64 {
        SplitMix64(seed: seed, key: tensorName, stream: UInt64(truncatingIfNeeded: stream))
    }
}

/// A merge method: a pure function from one tensor of each input to the merged tensor. See the top of this file.
public protocol MergeMethod: Sendable {
    /// mergekit's registered name (`merge_method:`).
    static var name: String { get }
    /// How `base_model` is used.
    static var basePolicy: BasePolicy { get }
    /// Every parameter the method reads; any other key in the config is an error.
    static var parameters: [ParameterSpec] { get }
    /// Allowed number of non-base inputs (mergekit's contract), checked before merging.
    static var nonBaseCount: ClosedRange<Int> { get }
    /// Whether the result depends on `--random-seed`.
    static var isRandomised: Bool { get }
    /// One-line description for the model card and `--help`.
    static var summary: String { get }
    /// Merges one tensor: reads `context.inputs`, writes every element of `output`.
    static func merge(_ context: TensorMergeContext, into output: UnsafeMutableBufferPointer<Float>) throws(MergeError)
}

extension MergeMethod {
    public static var nonBaseCount: ClosedRange<Int> { 1...Int.max }
    public static var isRandomised: Bool { false }
    public static var summary: String { name }
}
