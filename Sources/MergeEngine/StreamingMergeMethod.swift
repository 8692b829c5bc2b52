import CheckpointIO
import TensorKernels

/// One input of a streamed merge: its elements stay in the mapped file, in their stored dtype.
public struct StreamingInput: Sendable {
    public let model: String
    public let isBase: Bool
    public let source: TensorSource
    public let parameters: [String: ParameterValue]

    public init(model: String, isBase: Bool, source: TensorSource, parameters: [String: ParameterValue]) {
        self.model = model
        self.isBase = isBase
        self.source = source
        self.parameters = parameters
    }

    public func number(_ name: String) -> Double { parameters[name]?.number ?? 0 }
    public func bool(_ name: String) -> Bool { parameters[name]?.bool ?? false }
}

/// What a streamed method sees for one output tensor.
public struct StreamingMergeContext: Sendable {
    public let tensorName: String
    public let shape: [Int]
    public let inputs: [StreamingInput]
    public let parameters: [String: ParameterValue]
    public let seed: UInt64

    public init(
        tensorName: String, shape: [Int], inputs: [StreamingInput], parameters: [String: ParameterValue], seed: UInt64
    ) {
        self.tensorName = tensorName
        self.shape = shape
        self.inputs = inputs
        self.parameters = parameters
        self.seed = seed
    }

    public var count: Int { shape.reduce(1, *) }
    public var base: StreamingInput? { inputs.first { $0.isBase } }
    public var nonBase: [StreamingInput] { inputs.filter { !$0.isBase } }
    public func number(_ name: String) -> Double { parameters[name]?.number ?? 0 }
    public func bool(_ name: String) -> Bool { parameters[name]?.bool ?? false }
}

/// A method that can merge a tensor block by block straight from the mapped inputs into the output's stored
/// dtype (one or more passes over `BlockStream`), so no `Float` copy of any whole input exists. The engine
/// prefers this path; `merge(_:into:)` comes for free and runs the same code over `Float` buffers, so both paths
/// give identical numbers.
public protocol StreamingMergeMethod: MergeMethod {
    static func mergeStreaming(_ context: StreamingMergeContext, into sink: TensorSink) throws(MergeError)
}

extension StreamingMergeMethod {
    public static func merge(_ context: TensorMergeContext, into output: UnsafeMutableBufferPointer<Float>)
        throws(MergeError)
    {
        let s = StreamingMergeContext(
            tensorName: context.tensorName, shape: context.shape,
            inputs: context.inputs.map {
                StreamingInput(
                    model: $0.model, isBase: $0.isBase, source: TensorSource($0.values), parameters: $0.parameters)
            },
            parameters: context.parameters, seed: context.seed)
        try mergeStreaming(s, into: TensorSink(output))
    }
}
