import Foundation

/// PyTorch's CPU random generator (`torch.manual_seed` / the default generator), for routers drawn the way
/// mergekit-moe draws them: `torch.randn` and `torch.rand` of a contiguous float32 tensor.
///
/// The engine is the 32-bit Mersenne Twister, seeded with the low 32 bits of the seed (PyTorch's
/// `at::mt19937`). `rand` takes 24 bits of each draw: `(x & 0xFFFFFF) · 2⁻²⁴`, so it matches torch bit for bit.
/// `randn` of at least 16 elements (`normal_fill`) first fills the tensor with such uniforms, then applies
/// Box-Muller to each block of 16 (entries j and j+8 are a pair, `1 − u` into the log); a tail that is not a
/// whole block redraws the last 16 entries. PyTorch evaluates log/cos/sin with SLEEF's vectorised float
/// functions, this with the C library's double ones rounded to float: the normals agree to 1-2 float ulps
/// (measured: at most 2.4e-7 absolute over 537 draws of three seeds), not bit for bit.
public struct TorchGenerator: Sendable {
    /// `torch.initial_seed()` of a fresh process: the seed mergekit-moe draws with when none is given.
    public static let defaultSeed: UInt64 = 67_280_421_310_721

    private var state = [UInt32](repeating: 0, count: 624)
    private var index = 624

    public init(seed: UInt64 = TorchGenerator.defaultSeed) {
        state[0] = UInt32(truncatingIfNeeded: seed)
        for i in 1..<624 {
            let p = state[i - 1]
            state[i] = 1_812_433_253 &* (p ^ (p >> 30)) &+ UInt32(i)
        }
    }

    /// The next 32-bit draw.
    public mutating func next() -> UInt32 {
        if index >= 624 {
            for k in 0..<624 {
                let y = (state[k] & 0x8000_0000) | (state[(k + 1) % 624] & 0x7FFF_FFFF)
                state[k] = state[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1) != 0 ? 0x9908_B0DF : 0)
            }
            index = 0
        }
        var y = state[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C_5680
        y ^= (y << 15) & 0xEFC6_0000
        y ^= y >> 18
        return y
    }

    /// One uniform float in [0, 1), as `at::uniform_real_distribution<float>(0, 1)`.
    public mutating func uniform() -> Float {
        Float(next() & 0xFF_FFFF) * 0x1p-24
    }

    /// `torch.rand(count)`: uniform floats in [0, 1).
    public mutating func rand(_ count: Int) -> [Float] {
        (0..<count).map { _ in uniform() }
    }

    /// `torch.randn(count)` for `count >= 16` (every router: layers × experts × hidden); standard normals.
    public mutating func randn(_ count: Int) -> [Float] {
        precondition(count >= 16, "torch draws fewer than 16 normals another way")
        var data = rand(count)
        var i = 0
        while i + 16 <= count {
            Self.boxMuller16(&data, at: i)
            i += 16
        }
        if count % 16 != 0 {
            let start = count - 16
            for k in 0..<16 { data[start + k] = uniform() }
            Self.boxMuller16(&data, at: start)
        }
        return data
    }

    private static func boxMuller16(_ d: inout [Float], at o: Int) {
        for j in 0..<8 {
            let u1 = 1 - d[o + j]
            let u2 = d[o + j + 8]
            let radius = Float((-2 * Foundation.log(Double(u1))).squareRoot())
            let theta = Float(2 * Double.pi * Double(u2))
            d[o + j] = radius * Float(Foundation.cos(Double(theta)))
            d[o + j + 8] = radius * Float(Foundation.sin(Double(theta)))
        }
    }
}
