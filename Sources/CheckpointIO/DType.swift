/// The element types of the safetensors format.
///
/// `bitWidth` drives the byte-span check of every tensor; the sub-byte float formats (F4, F6) are legal as long as
/// a tensor's total bit count is whole bytes.
public enum DType: String, Sendable, CaseIterable, Codable {
    case BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, C64
    case F8_E4M3, F8_E5M2, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case F4, F6_E2M3, F6_E3M2

    /// Bits of storage per element.
    public var bitWidth: Int {
        switch self {
        case .BOOL, .U8, .I8, .F8_E4M3, .F8_E5M2, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: 8
        case .I16, .U16, .F16, .BF16: 16
        case .I32, .U32, .F32: 32
        case .I64, .U64, .F64, .C64: 64
        case .F4: 4
        case .F6_E2M3, .F6_E3M2: 6
        }
    }

    /// Whether the type converts to and from `Float` in this library (the types checkpoints store weights in).
    public var isConvertibleFloat: Bool {
        switch self {
        case .F32, .F16, .BF16, .F64: true
        default: false
        }
    }

    /// The name `config.json` uses for this type (`torch_dtype`).
    public var torchName: String? {
        switch self {
        case .F32: "float32"
        case .F16: "float16"
        case .BF16: "bfloat16"
        case .F64: "float64"
        default: nil
        }
    }

    /// Parses the names users write: `bf16`, `bfloat16`, `F16`, `float32`, ...
    public init?(userName: String) {
        switch userName.lowercased() {
        case "f32", "fp32", "float32", "float": self = .F32
        case "f16", "fp16", "float16", "half": self = .F16
        case "bf16", "bfloat16": self = .BF16
        case "f64", "fp64", "float64", "double": self = .F64
        default:
            guard let d = DType(rawValue: userName.uppercased()) else { return nil }
            self = d
        }
    }
}
