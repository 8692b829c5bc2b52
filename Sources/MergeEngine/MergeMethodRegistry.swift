/// The merge methods by mergekit name. Adding a method: one file in `Methods/`, one line here.
public enum MergeMethodRegistry {
    public static let all: [any MergeMethod.Type] = [
        LinearMerge.self, SlerpMerge.self, NuSlerpMerge.self, MultiSlerpMerge.self, KarcherMerge.self,
        TaskArithmeticMerge.self, TiesMerge.self, DareLinearMerge.self, DareTiesMerge.self, DellaMerge.self,
        DellaLinearMerge.self, BreadcrumbsMerge.self, BreadcrumbsTiesMerge.self, SCEMerge.self, RAMMerge.self,
        RAMPlusTLMerge.self, ModelStockMerge.self, NearSwapMerge.self, ArceeFusionMerge.self, PassthroughMerge.self,
        TSwitchMerge.self, EMRMerge.self, TallMasksMerge.self,
    ]

    private static let byName: [String: any MergeMethod.Type] = {
        var d: [String: any MergeMethod.Type] = [:]
        for m in all {
            precondition(d[m.name] == nil, "merge method \(m.name) registered twice")
            d[m.name] = m
        }
        return d
    }()

    /// The method called `name`, or nil.
    public static func method(named name: String) -> (any MergeMethod.Type)? { byName[name] }

    /// Registered names, sorted, for error messages.
    public static var names: [String] { byName.keys.sorted() }
}
