/// One weight tensor an encoder reads: values it owns (loaded from a checkpoint), or values borrowed from memory
/// another owner keeps alive and unchanged while the encoder runs — the resident weights of a `SwitchableModel`
/// inside `withActivated`, which `SwitchedEncoder` reads in place instead of copying the model per switch.
///
/// A borrowed weight is only valid while its lender's scope lasts; only `SwitchedEncoder` makes them, for an
/// encoder that does not leave that scope.
struct EncoderWeight: @unchecked Sendable {
    // @unchecked: a borrowed buffer is read-only here, and its lender keeps it alive and unmodified for the
    // encoder's lifetime (the body of `SwitchableModel.withActivated`, under the model's lock).
    private enum Storage {
        case owned([Float])
        case borrowed(UnsafeBufferPointer<Float>)
    }
    private let storage: Storage

    init(owning values: [Float]) { storage = .owned(values) }
    init(borrowing values: UnsafeBufferPointer<Float>) { storage = .borrowed(values) }

    var count: Int {
        switch storage {
        case .owned(let a): a.count
        case .borrowed(let b): b.count
        }
    }

    func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        switch storage {
        case .owned(let a): try a.withUnsafeBufferPointer(body)
        case .borrowed(let b): try body(b)
        }
    }

    /// The weights one after another, as one owned tensor (the stacked Q, K, V matrix).
    static func concatenated(_ parts: [EncoderWeight]) -> EncoderWeight {
        var out: [Float] = []
        out.reserveCapacity(parts.reduce(0) { $0 + $1.count })
        for p in parts { p.withUnsafeBufferPointer { out.append(contentsOf: $0) } }
        return EncoderWeight(owning: out)
    }
}
