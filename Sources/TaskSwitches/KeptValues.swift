import CZstd
import Foundation

/// The stored values of a random-mask switch (`SwitchPack.Kind.randomMask`): τ at every kept entry of the seeded
/// mask, rounded to a value code. The mask itself is not stored; it is regenerated from `maskSeed` and
/// `dropRatio` (`RandomMask`).
///
/// τ is stored unscaled and the switch's `lambda` holds DARE's rescale 1/(1−α): the rounding then does not depend
/// on α, and a reader can apply the values with or without the rescale.
public struct KeptValues: Sendable, Equatable {
    /// How values are stored; the decoded value is `code value × step`.
    public enum Code: String, Sendable, CaseIterable {
        /// IEEE binary32, exact.
        case f32
        /// IEEE binary16 of τ·2^s, s per tensor so that max |τ| lands in [2^14, 2^15): no overflow, and only
        /// entries more than 2^38 below the largest could flush to zero (the tensor then falls back to f32).
        case f16
        /// Signed bytes, step = max |τ| / 127 per tensor (round to nearest, ties away from zero).
        case int8

        var byteWidth: Int {
            switch self {
            case .f32: 4
            case .f16: 2
            case .int8: 1
            }
        }

        var tag: UInt8 {
            switch self {
            case .f32: 0
            case .f16: 1
            case .int8: 2
            }
        }

        init?(tag: UInt8) {
            switch tag {
            case 0: self = .f32
            case 1: self = .f16
            case 2: self = .int8
            default: return nil
            }
        }
    }

    public let code: Code
    /// Multiplier of a code value: 1 for f32, 2^−s for f16, max |τ| / 127 for int8.
    public let step: Float
    /// Decoded values (exactly representable in `code` × `step`), one per index of the switch's `positive`.
    public let values: [Float]
    /// The tensor's mask seed (`RandomMask.tensorSeed`).
    public let maskSeed: UInt64
    /// α of the mask: each entry was kept with probability 1 − α.
    public let dropRatio: Double

    public init(code: Code, step: Float, values: [Float], maskSeed: UInt64, dropRatio: Double) {
        self.code = code
        self.step = step
        self.values = values
        self.maskSeed = maskSeed
        self.dropRatio = dropRatio
    }

    /// What rounding did to one tensor's values.
    public struct Rounding: Sendable, Equatable {
        /// Non-zero τ that the code would have turned into 0 (f16: the tensor fell back to f32; int8: reported).
        public var flushed = 0
        /// Finite τ the code could not hold (f16 only; the tensor fell back to f32).
        public var overflowed = 0
        /// f16 values stored as subnormals (fewer than 11 significant bits).
        public var subnormal = 0
        /// True when the tensor was stored as f32 instead of the requested code.
        public var fellBack = false

        public init() {}
    }

    /// Rounds τ (finite) to `code`; f16 falls back to f32 when any non-zero entry would flush or overflow.
    public static func round(_ tau: [Float], code: Code) -> (code: Code, step: Float, values: [Float], Rounding) {
        var report = Rounding()
        let maxAbs = tau.reduce(Float(0)) { max($0, abs($1)) }
        switch code {
        case .f32:
            return (.f32, 1, tau, report)
        case .int8:
            guard maxAbs > 0 else { return (.int8, 1, tau, report) }
            let step = maxAbs / 127
            // Outside [2^-100, 2^100] a code value × step could lose bits; such a tensor is stored exactly.
            guard step >= minStep, step <= maxStep else {
                report.fellBack = true
                return (.f32, 1, tau, report)
            }
            let values = tau.map { v -> Float in
                let q = Float(Int8(clamping: Int((v / step).rounded(.toNearestOrAwayFromZero))))
                if q == 0 && v != 0 { report.flushed += 1 }
                return q * step
            }
            return (.int8, step, values, report)
        case .f16:
            guard maxAbs > 0 else { return (.f16, 1, tau, report) }
            let s = max(-100, min(100, 14 - Int(maxAbs.exponent)))
            let up = Float(sign: .plus, exponent: s, significand: 1)
            let step = Float(sign: .plus, exponent: -s, significand: 1)
            var values = [Float](repeating: 0, count: tau.count)
            for (j, v) in tau.enumerated() {
                let h = Float16(v * up)
                if h == 0 && v != 0 { report.flushed += 1 }
                if h.isInfinite { report.overflowed += 1 }
                if h.isSubnormal { report.subnormal += 1 }
                values[j] = Float(h) * step
            }
            if report.flushed > 0 || report.overflowed > 0 {
                report.fellBack = true
                return (.f32, 1, tau, report)
            }
            return (.f16, step, values, report)
        }
    }

    /// The range a step must lie in (checked by the decoder): every code value × step is then an exact Float.
    static let minStep: Float = 0x1p-100
    static let maxStep: Float = 0x1p100

    /// Whether `step` is one the encoder can have written for `code`.
    static func validStep(_ step: Float, code: Code) -> Bool {
        switch code {
        case .f32: step == 1
        case .f16: step >= minStep && step <= maxStep && step.significandBitPattern == 0
        case .int8: step >= minStep && step <= maxStep
        }
    }

    // MARK: Bytes

    /// The code values of `values` (aligned with the full mask, zeros included) as byte planes (all first bytes,
    /// then all second bytes, …), zstd-compressed: the exponent bytes and the zeros of untouched rows compress.
    static func pack(_ values: [Float], code: Code, step: Float) -> [UInt8] {
        let n = values.count
        let width = code.byteWidth
        var planes = [UInt8](repeating: 0, count: n * width)
        for (j, v) in values.enumerated() {
            let bits: UInt32
            switch code {
            case .f32: bits = v.bitPattern
            case .f16: bits = UInt32(Float16(v / step).bitPattern)
            case .int8: bits = UInt32(UInt8(bitPattern: Int8((v / step).rounded())))
            }
            for b in 0..<width { planes[b * n + j] = UInt8(truncatingIfNeeded: bits >> (8 * UInt32(b))) }
        }
        let bound = ZSTD_compressBound(planes.count)
        var out = [UInt8](repeating: 0, count: bound)
        let size = out.withUnsafeMutableBytes { o in
            planes.withUnsafeBytes { i in ZSTD_compress(o.baseAddress, bound, i.baseAddress, planes.count, 19) }
        }
        precondition(ZSTD_isError(size) == 0, "zstd failed on \(planes.count) bytes")
        return Array(out.prefix(size))
    }

    /// Decodes `count` values from a zstd frame of byte planes; nil when the frame is not exactly that many values
    /// or a value is not finite.
    static func unpack(_ frame: UnsafeRawBufferPointer, count: Int, code: Code, step: Float) -> [Float]? {
        let width = code.byteWidth
        let size = count * width
        guard frame.count > 0,
            ZSTD_getFrameContentSize(frame.baseAddress, frame.count) == UInt64(size)
        else { return size == 0 && frame.isEmpty ? [] : nil }
        var planes = [UInt8](repeating: 0, count: max(1, size))
        let got = planes.withUnsafeMutableBytes { o in
            ZSTD_decompress(o.baseAddress, size, frame.baseAddress, frame.count)
        }
        guard ZSTD_isError(got) == 0, got == size else { return nil }
        var values = [Float](repeating: 0, count: count)
        for j in 0..<count {
            var bits: UInt32 = 0
            for b in 0..<width { bits |= UInt32(planes[b * count + j]) << (8 * UInt32(b)) }
            let v: Float
            switch code {
            case .f32: v = Float(bitPattern: bits)
            case .f16: v = Float(Float16(bitPattern: UInt16(truncatingIfNeeded: bits))) * step
            case .int8: v = Float(Int8(bitPattern: UInt8(truncatingIfNeeded: bits))) * step
            }
            guard v.isFinite else { return nil }
            values[j] = v
        }
        return values
    }
}
