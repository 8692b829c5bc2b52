/// What picks the packs for inputs of unknown task from their base-model features: the paper's k-NN over a
/// labelled query set (`AutoSwitchRouter`) or the closed-form LDA router of a router file (`LDARouter`). Callers
/// (evaluation, the server) route through this and need not know which.
public protocol TaskRouter: Sendable {
    /// The tasks the weights refer to, in order.
    var routedTasks: [String] { get }
    /// Feature dimension the router expects.
    var featureDimension: Int { get }
    /// Per example, one weight per task (all zero: the base model); in the batch modes the examples of each run of
    /// `batchSize` share their mean (or its argmax).
    func weights(_ features: QuerySet, mode: AutoSwitchRouter.Mode, batchSize: Int) throws(SwitchError) -> [[Double]]
}

extension AutoSwitchRouter: TaskRouter {
    public var routedTasks: [String] { query.tasks }
    public var featureDimension: Int { query.dimension }
}

extension LDARouter: TaskRouter {
    public var routedTasks: [String] { tasks }
    public var featureDimension: Int { dimension }

    /// One-hot per example (see `weights(_:)`), aggregated over batches as the k-NN router's shares are.
    public func weights(_ features: QuerySet, mode: AutoSwitchRouter.Mode, batchSize: Int) throws(SwitchError)
        -> [[Double]]
    {
        AutoSwitchRouter.aggregate(try weights(features), mode: mode, batchSize: batchSize)
    }
}
