import TensorKernels

// The eight registered names of the generalized task arithmetic family (`GTA`): each picks a sparsifier, the
// consensus and the defaults.

/// `base + λ Σ wᵢ (xᵢ − base)` (Ilharco et al. 2023); negative weights subtract a task (forgetting).
public enum TaskArithmeticMerge: StreamingMergeMethod {
    public static let name = "task_arithmetic"
    public static let basePolicy = BasePolicy.required
    public static let summary = "task arithmetic: base + λ Σ wᵢ τᵢ"
    public static let parameters = GTA.parameters(.none, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .none, consensus: false), c, into: sink)
    }
}

/// TIES (Yadav et al. 2023): keep each task vector's top-`density` magnitudes, elect a sign per entry by the sum,
/// average the agreeing entries.
public enum TiesMerge: StreamingMergeMethod {
    public static let name = "ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "TIES: magnitude trim, sign election, disjoint mean"
    public static let parameters = GTA.parameters(.magnitude, normalize: true, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitude, consensus: true), c, into: sink)
    }
}

/// DARE + TIES sign consensus (Yu et al. 2024).
public enum DareTiesMerge: StreamingMergeMethod {
    public static let name = "dare_ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "DARE TIES: random drop, L1 rescale, sign consensus"
    public static let parameters = GTA.parameters(.random, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .random, consensus: true), c, into: sink)
    }
}

/// DARE without consensus.
public enum DareLinearMerge: StreamingMergeMethod {
    public static let name = "dare_linear"
    public static let basePolicy = BasePolicy.required
    public static let summary = "linear DARE: random drop, L1 rescale, weighted sum"
    public static let parameters = GTA.parameters(.random, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .random, consensus: false), c, into: sink)
    }
}

/// Model Breadcrumbs (Davari & Belilovsky 2023): drop the largest `gamma` and the smallest magnitudes.
public enum BreadcrumbsMerge: StreamingMergeMethod {
    public static let name = "breadcrumbs"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Model Breadcrumbs: drop outliers and small entries"
    public static let parameters = GTA.parameters(.magnitudeOutliers, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitudeOutliers, consensus: false), c, into: sink)
    }
}

/// Breadcrumbs with TIES sign consensus.
public enum BreadcrumbsTiesMerge: StreamingMergeMethod {
    public static let name = "breadcrumbs_ties"
    public static let basePolicy = BasePolicy.required
    public static let summary = "Model Breadcrumbs with TIES sign consensus"
    public static let parameters = GTA.parameters(.magnitudeOutliers, normalize: false, rescale: false)
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .magnitudeOutliers, consensus: true), c, into: sink)
    }
}

/// DELLA (Deep et al. 2024): rank-dependent random drop (MagPrune), L1 rescale, sign consensus.
public enum DellaMerge: StreamingMergeMethod {
    public static let name = "della"
    public static let basePolicy = BasePolicy.required
    public static let summary = "DELLA: magnitude-ranked stochastic drop, rescale, sign consensus"
    public static let parameters = GTA.parameters(.dellaMagprune, normalize: true, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .dellaMagprune, consensus: true), c, into: sink)
    }
}

/// DELLA without consensus.
public enum DellaLinearMerge: StreamingMergeMethod {
    public static let name = "della_linear"
    public static let basePolicy = BasePolicy.required
    public static let summary = "linear DELLA: magnitude-ranked stochastic drop, rescale, weighted sum"
    public static let parameters = GTA.parameters(.dellaMagprune, normalize: false, rescale: true)
    public static let isRandomised = true
    public static func mergeStreaming(_ c: StreamingMergeContext, into sink: TensorSink) throws(MergeError) {
        try GTA.merge(.init(sparsification: .dellaMagprune, consensus: false), c, into: sink)
    }
}
