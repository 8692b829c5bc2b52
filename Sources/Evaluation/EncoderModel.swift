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
}

/// An encoder that runs a batch in which each sequence sees its own group's weights, in one forward pass.
public protocol MixedEncoderModel: EncoderModel {
    /// Runs the encoder over `batch`, sequence `b` on the weights of group `groups[b]` (as `weights` lends them),
    /// and hands the last hidden states to `body` in the batch's order; they are valid only inside it.
    func withHiddenStates<R>(
        _ batch: TokenBatch, groups: [Int], weights: any GroupWeights, _ body: (HiddenStates) throws -> R
    ) rethrows -> R
}
