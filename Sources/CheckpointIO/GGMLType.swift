/// The tensor element types of GGUF files (ggml's `ggml_type`), with their block geometry.
///
/// Every type ggml still defines is known here so that a file of any of them parses and its byte spans are
/// checked; `isDequantizable` marks the ones `GGMLDequantize` converts to f32. Raw values are the file's codes
/// (gaps are types ggml removed).
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9
    case Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15
    case IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23
    case I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30
    case TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39

    /// Elements per block: a row (the first GGUF dimension) must hold a whole number of blocks.
    public var blockSize: Int {
        switch self {
        case .F32, .F16, .BF16, .I8, .I16, .I32, .I64, .F64: 1
        case .Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q8_0, .Q8_1, .IQ4_NL, .MXFP4: 32
        default: 256
        }
    }

    /// Bytes per block.
    public var typeSize: Int {
        switch self {
        case .F32, .I32: 4
        case .F16, .BF16, .I16: 2
        case .I8: 1
        case .I64, .F64: 8
        case .Q4_0, .IQ4_NL: 18
        case .Q4_1: 20
        case .Q5_0: 22
        case .Q5_1: 24
        case .Q8_0: 34
        case .Q8_1: 40
        case .MXFP4: 17
        case .Q2_K: 84
        case .Q3_K, .IQ3_S: 110
        case .Q4_K: 144
        case .Q5_K: 176
        case .Q6_K: 210
        case .Q8_K: 292
        case .IQ2_XXS, .TQ2_0: 66
        case .IQ2_XS: 74
        case .IQ3_XXS: 98
        case .IQ1_S: 50
        case .IQ2_S: 82
        case .IQ4_XS: 136
        case .IQ1_M: 56
        case .TQ1_0: 54
        }
    }

    /// ggml's spelling (`Q4_K`, `F16`).
    public var name: String { String(describing: self) }

    /// Whether `GGMLDequantize` converts this type to f32.
    public var isDequantizable: Bool {
        switch self {
        case .F32, .F16, .BF16, .Q8_0, .Q4_0, .Q4_1, .Q5_0, .Q5_1, .Q2_K, .Q3_K, .Q4_K, .Q5_K, .Q6_K, .Q8_K: true
        default: false
        }
    }

    /// Bytes of a tensor with `dims` (GGUF order, innermost first), or nil when the first dimension is not whole
    /// blocks or the size overflows.
    public static func byteCount(dims: [Int], type: GGMLType) -> Int? {
        var elements = 1
        for d in dims {
            guard d >= 0 else { return nil }
            let (p, o) = elements.multipliedReportingOverflow(by: d)
            if o { return nil }
            elements = p
        }
        let rowLength = dims.first ?? 1
        guard rowLength % type.blockSize == 0 else { return nil }
        let (bytes, o) = (elements / type.blockSize).multipliedReportingOverflow(by: type.typeSize)
        return o ? nil : bytes
    }
}
