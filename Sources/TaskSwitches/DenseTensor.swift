/// A dense tensor carried as is (the task's classification head).
public struct DenseTensor: Sendable, Equatable {
    /// A head tensor of this name and shape [1] is a cosine head's logit scale (CLIP's protocol): a head file keeps
    /// it in its `__metadata__` under the same key, a pack as this one-element tensor, so the format is unchanged.
    public static let logitScaleName = "logit_scale"

    public let name: String
    public let shape: [Int]
    public let values: [Float]

    public init(name: String, shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape does not match the value count")
        self.name = name
        self.shape = shape
        self.values = values
    }
}
