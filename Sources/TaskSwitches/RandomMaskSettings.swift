/// How `SwitchPack.build` makes a random-mask pack instead of a T-Switch.
public struct RandomMaskSettings: Sendable {
    /// The pack seed; each tensor's mask seed is `RandomMask.tensorSeed(packSeed: seed, name:)`.
    public var seed: UInt64
    public var code: KeptValues.Code
    /// Called once per tensor (from worker threads) with what rounding did to its values.
    public var report: (@Sendable (String, KeptValues.Rounding) -> Void)?

    public init(
        seed: UInt64 = 0, code: KeptValues.Code = .f16, report: (@Sendable (String, KeptValues.Rounding) -> Void)? = nil
    ) {
        self.seed = seed
        self.code = code
        self.report = report
    }
}
