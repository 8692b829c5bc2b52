/// A transformer encoder: token ids in, the last hidden state of every real (unpadded) token out.
///
/// Pooling is not the encoder's job: `MeanPooling` (or another pooling) turns the hidden states into one vector per
/// text. `EncoderLoader` builds the encoder a folder's `config.json` names.
public protocol EncoderModel: Sendable {
    var hiddenSize: Int { get }
    /// Longest sequence the model accepts, special tokens included (`max_position_embeddings` less any offset).
    var maxSequenceLength: Int { get }
    /// Rows of the token embedding; every id fed to the model must be below it.
    var vocabularySize: Int { get }
    /// Runs the encoder over `batch` and hands the last hidden states to `body`; they are valid only inside it.
    func withHiddenStates<R>(_ batch: TokenBatch, _ body: (HiddenStates) throws -> R) rethrows -> R
}

/// An encoder that also pools intermediate layers: the features of layer-feature routers (`LDARouter.layers`).
public protocol LayerPoolingEncoder: EncoderModel {
    /// Layers of the transformer; layer indices run 0 (the embedding output) through `layerCount`.
    var layerCount: Int { get }
    /// Masked mean-pooled hidden states of `layers`, per sequence the layers' rows one after another.
    func poolLayers(_ batch: TokenBatch, layers: [Int]) -> [Float]
}

/// The last hidden states of a batch's real tokens, packed: sequence `b` occupies rows
/// `starts[b] ..< starts[b] + lengths[b]` of a `tokens × hiddenSize` row-major matrix.
///
/// The values point into the encoder's workspace, which is reused once the closure that received them returns.
public struct HiddenStates {
    public let values: UnsafeBufferPointer<Float>
    public let starts: [Int]
    public let lengths: [Int]
    public let hiddenSize: Int

    public var count: Int { starts.count }
}

/// The weights each group of a mixed batch sees, by the encoder's own (unprefixed) tensor names, lent for one
/// forward pass by a switching transaction (`SwitchedEncoder` over `SwitchableModel.withMixes`).
///
/// The encoder's own weights must be the lender's base: a group that leaves a tensor unchanged reads them.
public protocol GroupWeights {
    /// Whether `group` changes tensor `name` at all.
    func switches(_ name: String, group: Int) -> Bool
    /// Writes tensor `name` as `group` sees it into `out` (exactly the tensor's elements).
    func materialize(_ name: String, group: Int, into out: UnsafeMutableBufferPointer<Float>)
    /// Writes rows `rows` of the `rows × width` table `name` as `group` sees them, one after another into `out`.
    func gatherRows(_ name: String, group: Int, rows: [Int], width: Int, into out: UnsafeMutableBufferPointer<Float>)
    /// Tensor `name` as `group` sees it, to be written tile by tile; nil when the group leaves it unchanged.
    func tiles(_ name: String, group: Int) -> WeightTiles?
    /// How the encoder lays out the pass (`MixedLayout`).
    var layout: MixedLayout { get }
}

/// How a mixed forward pass switches a group's weights (docs/bench-mixed.md has the measurements).
public enum MixedLayout: Sendable {
    /// Per layer and group, the whole layer as the group sees it written into scratch, then the group's rows
    /// through the ordinary products: one pass over the layer per group whatever its row count.
    case layerPerGroup
    /// All groups in lockstep through each linear layer, tile of output rows by tile: each group's tile switched
    /// into a small cache-resident scratch and multiplied by its rows at once, so the base is read once per layer
    /// and no switched layer leaves the cache; groups with many rows still get their whole tensor and one product.
    case tileFused
}

/// One tensor as one group sees it, written on demand tile by tile (a range of its flat elements).
public struct WeightTiles: Sendable {
    /// Number of elements of the tensor.
    public let count: Int
    let writeTile: @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void

    public init(count: Int, write: @escaping @Sendable (Range<Int>, UnsafeMutablePointer<Float>) -> Void) {
        self.count = count
        self.writeTile = write
    }

    /// Writes elements `elements` as the group sees them into `out` (`elements.count` values).
    func write(_ elements: Range<Int>, into out: UnsafeMutablePointer<Float>) { writeTile(elements, out) }
}

/// An encoder that runs a batch in which each sequence sees its own group's weights, in one forward pass.
public protocol MixedEncoderModel: EncoderModel {
    /// Runs the encoder over `batch`, sequence `b` on the weights of group `groups[b]` (as `weights` lends them),
    /// and hands the last hidden states to `body` in the batch's order; they are valid only inside it.
    func withHiddenStates<R>(
        _ batch: TokenBatch, groups: [Int], weights: any GroupWeights, _ body: (HiddenStates) throws -> R
    ) rethrows -> R
}
