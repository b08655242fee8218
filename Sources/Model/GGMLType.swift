/// The tensor element types a GGUF file can name (ggml's `enum ggml_type`; the raw value is the id
/// stored in the file). Squeeze reads and writes the bytes of the `supported` ones; the others
/// are known by id and name so that errors can say what a file holds ("Q4_K (12) is not
/// supported"). Ids 4, 5, 31-33 and 36-38 were removed from ggml and are unknown here, as they
/// are to ggml's own reader.
///
/// Block sizes and bytes per block: ggml's `type_traits` (src/ggml.c) and gguf-py's
/// `GGML_QUANT_SIZES`, with QK_K = 256.
public enum GGMLType: UInt32, CaseIterable, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_XXS = 16, iq2_XS = 17, iq3_XXS = 18, iq1_S = 19, iq4_NL = 20, iq3_S = 21, iq2_S = 22, iq4_XS = 23
    case i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_M = 29, bf16 = 30
    case tq1_0 = 34, tq2_0 = 35, mxfp4 = 39, nvfp4 = 40, q1_0 = 41, q2_0 = 42

    /// The one table: (name as ggml and gguf-py spell it, elements per block, bytes per block).
    private var traits: (name: String, blockSize: Int, bytesPerBlock: Int) {
        let k = 256  // QK_K
        switch self {
        case .f32: return ("F32", 1, 4)
        case .f16: return ("F16", 1, 2)
        case .q4_0: return ("Q4_0", 32, 2 + 16)
        case .q4_1: return ("Q4_1", 32, 2 + 2 + 16)
        case .q5_0: return ("Q5_0", 32, 2 + 4 + 16)
        case .q5_1: return ("Q5_1", 32, 2 + 2 + 4 + 16)
        case .q8_0: return ("Q8_0", 32, 2 + 32)
        case .q8_1: return ("Q8_1", 32, 4 + 4 + 32)
        case .q2_K: return ("Q2_K", k, 2 + 2 + k / 16 + k / 4)
        case .q3_K: return ("Q3_K", k, 2 + k / 4 + k / 8 + 12)
        case .q4_K: return ("Q4_K", k, 2 + 2 + k / 2 + 12)
        case .q5_K: return ("Q5_K", k, 2 + 2 + k / 2 + k / 8 + 12)
        case .q6_K: return ("Q6_K", k, 2 + k / 2 + k / 4 + k / 16)
        case .q8_K: return ("Q8_K", k, 4 + k + k / 8)
        case .iq2_XXS: return ("IQ2_XXS", k, 2 + k / 4)
        case .iq2_XS: return ("IQ2_XS", k, 2 + k / 4 + k / 32)
        case .iq3_XXS: return ("IQ3_XXS", k, 2 + k / 4 + k / 8)
        case .iq1_S: return ("IQ1_S", k, 2 + k / 8 + k / 16)
        case .iq4_NL: return ("IQ4_NL", 32, 2 + 16)
        case .iq3_S: return ("IQ3_S", k, 2 + k / 4 + k / 8 + k / 32 + 4)
        case .iq2_S: return ("IQ2_S", k, 2 + k / 4 + k / 16)
        case .iq4_XS: return ("IQ4_XS", k, 2 + 2 + k / 2 + k / 64)
        case .i8: return ("I8", 1, 1)
        case .i16: return ("I16", 1, 2)
        case .i32: return ("I32", 1, 4)
        case .i64: return ("I64", 1, 8)
        case .f64: return ("F64", 1, 8)
        case .iq1_M: return ("IQ1_M", k, k / 8 + k / 16 + k / 32)
        case .bf16: return ("BF16", 1, 2)
        case .tq1_0: return ("TQ1_0", k, 2 + 4 * 13)
        case .tq2_0: return ("TQ2_0", k, 2 + 64)
        case .mxfp4: return ("MXFP4", 32, 1 + 16)
        case .nvfp4: return ("NVFP4", 64, 4 + 32)
        case .q1_0: return ("Q1_0", 128, 2 + 16)
        case .q2_0: return ("Q2_0", 64, 2 + 16)
        }
    }

    /// ggml's name ("Q8_0").
    public var name: String { traits.name }
    /// Elements per block (1 for the plain types).
    public var blockSize: Int { traits.blockSize }
    /// Bytes of one block.
    public var bytesPerBlock: Int { traits.bytesPerBlock }
    /// Types whose bytes Squeeze reads and writes: F32, F16, BF16 (also as floats), Q4_0, Q8_0.
    public var supported: Bool { Self.supportedTypes.contains(self) }
    public static let supportedTypes: [GGMLType] = [.f32, .f16, .q4_0, .q8_0, .bf16]
    /// Types `GGUFFile.floats(of:)` converts to Float32.
    public var isFloat: Bool { self == .f32 || self == .f16 || self == .bf16 }

    /// "Q4_K (12)".
    public var description: String { "\(name) (\(rawValue))" }

    /// The type called `name` (as ggml spells it, case-insensitive).
    public init?(name: String) {
        guard let t = Self.allCases.first(where: { $0.name.caseInsensitiveCompare(name) == .orderedSame }) else { return nil }
        self = t
    }

    /// Bytes of `n` consecutive elements (a row, or a whole tensor in ggml order): nil when `n` is
    /// negative, not a multiple of `blockSize`, or the byte count overflows Int.
    public func byteCount(elements n: Int) -> Int? {
        guard n >= 0, n % blockSize == 0 else { return nil }
        let (bytes, overflow) = (n / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }

    /// Bytes of a row of `n` elements; throws when `n` is not a multiple of the block size.
    public func rowBytes(_ n: Int) throws -> Int {
        guard let bytes = byteCount(elements: n) else { throw SizeError(type: self, elements: n) }
        return bytes
    }

    /// A row (or tensor) whose element count the type cannot hold.
    public struct SizeError: Error, CustomStringConvertible {
        public let type: GGMLType
        public let elements: Int
        public var description: String {
            elements >= 0 && elements % type.blockSize == 0
                ? "\(elements) elements of \(type) need more bytes than Int can count"
                : "\(elements) elements is not a multiple of the \(type) block size \(type.blockSize)"
        }
    }
}
