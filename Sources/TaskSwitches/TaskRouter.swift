/// What picks the packs for inputs of unknown task from their base-model features: the paper's k-NN over a
/// labelled query set (`AutoSwitchRouter`) or the closed-form LDA router of a router file (`LDARouter`). Callers
/// (evaluation, the server) route through this and need not know which.
public protocol TaskRouter: Sendable {
    /// The tasks the weights refer to, in order.
    var routedTasks: [String] { get }
    /// Feature dimension the router expects.
    var featureDimension: Int { get }
    /// Whether features must be scaled to unit length before routing (what the router was fitted on).
    var wantsUnitFeatures: Bool { get }
    /// The base layers whose mean-pooled states (each at unit length, concatenated, scaled by 1/√n) are the
    /// features; empty: the final sentence embedding (see `LDARouter.layers`).
    var featureLayers: [Int] { get }
    /// Per example, one weight per task (all zero: the base model); in the batch modes the examples of each run of
    /// `batchSize` share their mean (or its argmax).
    func weights(_ features: QuerySet, mode: AutoSwitchRouter.Mode, batchSize: Int) throws(SwitchError) -> [[Double]]
    /// Whether the router also reads the texts themselves (an LDA router file with lexical evidence).
    var usesTexts: Bool { get }
    /// `weights(_:mode:batchSize:)` with each row's text, for routers that read them (`usesTexts`); nil texts: the
    /// features alone.
    func weights(_ features: QuerySet, texts: [String]?, mode: AutoSwitchRouter.Mode, batchSize: Int)
        throws(SwitchError) -> [[Double]]
}

extension TaskRouter {
    /// Features only, unless a router says otherwise.
    public var usesTexts: Bool { false }

    public func weights(_ features: QuerySet, texts: [String]?, mode: AutoSwitchRouter.Mode, batchSize: Int)
        throws(SwitchError) -> [[Double]]
    {
        try weights(features, mode: mode, batchSize: batchSize)
    }
}

extension AutoSwitchRouter: TaskRouter {
    public var routedTasks: [String] { query.tasks }
    public var featureDimension: Int { query.dimension }
    /// Raw features, as the paper's query sets hold them (cosine distance ignores the scale anyway).
    public var wantsUnitFeatures: Bool { false }
    public var featureLayers: [Int] { [] }
}

extension LDARouter: TaskRouter {
    public var routedTasks: [String] { tasks }
    public var featureDimension: Int { dimension }
    /// LDA router files are fitted on unit-length features (`tswitch embed --normalize`; `route --build` embeds
    /// JSONL inputs so), the space `docs/routing.md` measured.
    public var wantsUnitFeatures: Bool { true }
    public var featureLayers: [Int] { layers }
    public var usesTexts: Bool { lexical != nil }

    /// One-hot per example (see `weights(_:)`), aggregated over batches as the k-NN router's shares are.
    public func weights(_ features: QuerySet, mode: AutoSwitchRouter.Mode, batchSize: Int) throws(SwitchError)
        -> [[Double]]
    {
        AutoSwitchRouter.aggregate(try weights(features), mode: mode, batchSize: batchSize)
    }

    /// The same with lexical evidence from `texts` (when the file has a lexical model).
    public func weights(_ features: QuerySet, texts: [String]?, mode: AutoSwitchRouter.Mode, batchSize: Int)
        throws(SwitchError) -> [[Double]]
    {
        AutoSwitchRouter.aggregate(try weights(features, texts: texts), mode: mode, batchSize: batchSize)
    }
}
