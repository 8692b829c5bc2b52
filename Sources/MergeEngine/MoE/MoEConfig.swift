import CheckpointIO

/// A mergekit-moe configuration: which dense models become the experts of a sparse mixture, and how its routers
/// are initialised.
///
/// The fields are mergekit's `MoEMergeConfig` (mergekit/moe/config.py) with their defaults; `MoEConfigParser`
/// reads them from YAML and rejects what mergekit-moe would reject.
public struct MoEConfig: Sendable, Equatable {
    /// The model whose attention, norms, embeddings and head the mixture keeps.
    public var baseModel: String
    public var experts: [MoEExpert]
    public var gateMode: MoEGateMode
    /// Output dtype; nil keeps the base model's `torch_dtype` (mergekit's `select_dtype`).
    public var dtype: DType?
    public var expertsPerToken: Int
    /// Experts every token goes through (Qwen2-MoE's one shared expert).
    public var sharedExperts: [MoEExpert]
    /// mergekit's `architecture`: a case-insensitive prefix of an output architecture's name ("mixtral", "qwen").
    public var architecture: String?
    /// The file the configuration came from and its text (kept in the output as `mergekit_moe_config.yml`).
    public var file: String
    public var yaml: String

    public init(
        baseModel: String, experts: [MoEExpert], gateMode: MoEGateMode = .hidden, dtype: DType? = nil,
        expertsPerToken: Int = 2, sharedExperts: [MoEExpert] = [], architecture: String? = nil, file: String = "",
        yaml: String = ""
    ) {
        self.baseModel = baseModel
        self.experts = experts
        self.gateMode = gateMode
        self.dtype = dtype
        self.expertsPerToken = expertsPerToken
        self.sharedExperts = sharedExperts
        self.architecture = architecture
        self.file = file
        self.yaml = yaml
    }
}

/// One expert: a dense model whose MLP of every layer becomes expert `i` of that layer.
public struct MoEExpert: Sendable, Equatable {
    public var sourceModel: String
    /// Prompts the router should send to this expert (`cheap_embed`, `hidden`) and prompts it should not.
    public var positivePrompts: [String]
    public var negativePrompts: [String]
    /// Scale of the expert's `down_proj` (its contribution to the residual stream), applied before the dtype cast.
    public var residualScale: Double?
    /// The config line of the entry, for messages.
    public var line: Int

    public init(
        sourceModel: String, positivePrompts: [String] = [], negativePrompts: [String] = [],
        residualScale: Double? = nil, line: Int = 0
    ) {
        self.sourceModel = sourceModel
        self.positivePrompts = positivePrompts
        self.negativePrompts = negativePrompts
        self.residualScale = residualScale
        self.line = line
    }
}

/// How router rows are initialised (mergekit/moe/router.py `get_gate_params`).
public enum MoEGateMode: String, Sendable, CaseIterable {
    /// Hidden states of the base model for each expert's prompts, per layer: each prompt's last token
    /// (`hidden_last` is the same).
    case hidden
    /// The same, each prompt's mean over its tokens.
    case hiddenAverage = "hidden_avg"
    /// The normalised sum of the prompts' token embeddings, the same row for every layer.
    case cheapEmbed = "cheap_embed"
    /// Standard normal rows (`torch.randn`).
    case random
    /// Rows uniform in ±1/√hidden, torch.nn.Linear's default initialisation (`torch.rand`).
    case uniformRandom = "uniform_random"

    /// Whether rows come from prompts (and experts must carry them).
    public var usesPrompts: Bool { self == .hidden || self == .hiddenAverage || self == .cheapEmbed }
}
