import CKernels

/// ggml's block formats, the one table Squeeze quantizes by (as ggml's `type_traits`): block size,
/// bytes per block, GGML type id, the reference quantizer and dequantizer (bit for bit ggml's,
/// in CKernels), the per-block scale rule and the per-weight code rule GPTQ uses. Blocks run along
/// the input dimension of one output (a row of the `[out, in]` view), as GGUF stores them.
/// `QuantFormatTests` holds the table to ggml's sizes and gguf-py's bytes.
public enum QuantFormat: String, CaseIterable, Sendable, Codable {
    /// 34 bytes per 32 weights: an fp16 scale d and 32 int8 codes, w = d·q (8.5 bits per weight).
    case q8_0
    /// 18 bytes per 32 weights: an fp16 scale d and 32 4-bit codes, w = d·(q − 8) (4.5 bits).
    case q4_0

    /// Weights per block.
    public static let blockSize = 32
    public var blockBytes: Int { self == .q8_0 ? 34 : 18 }
    /// The GGML type id (GGUF's tensor type).
    public var ggmlType: UInt32 { self == .q8_0 ? 8 : 2 }
    public var bitsPerWeight: Double { Double(8 * blockBytes) / Double(Self.blockSize) }
    /// "Q8_0", "Q4_0" (ggml's spelling).
    public var name: String { rawValue.uppercased() }

    /// Bytes of `n` weights (n a multiple of 32).
    public func bytes(_ n: Int) -> Int { n / Self.blockSize * blockBytes }

    /// blocks [n / 32] <- x [n] by ggml's reference quantizer.
    public func quantize(_ x: UnsafePointer<Float>, count n: Int, into blocks: UnsafeMutableRawPointer) {
        switch self {
        case .q8_0: squeeze_quantize_q8_0(x, blocks.assumingMemoryBound(to: squeeze_block_q8_0.self), n)
        case .q4_0: squeeze_quantize_q4_0(x, blocks.assumingMemoryBound(to: squeeze_block_q4_0.self), n)
        }
    }

    /// y [n] <- blocks [n / 32] (fp16 scale widened, times the code, in F32).
    public func dequantize(_ blocks: UnsafeRawPointer, count n: Int, into y: UnsafeMutablePointer<Float>) {
        switch self {
        case .q8_0: squeeze_dequantize_q8_0(blocks.assumingMemoryBound(to: squeeze_block_q8_0.self), y, n)
        case .q4_0: squeeze_dequantize_q4_0(blocks.assumingMemoryBound(to: squeeze_block_q4_0.self), y, n)
        }
    }

    /// The scale d ggml's rule gives a block of 32 values (F32, before its fp16 rounding).
    public func scale(_ x32: UnsafePointer<Float>) -> Float {
        self == .q8_0 ? squeeze_q8_0_scale(x32) : squeeze_q4_0_scale(x32)
    }

    /// The stored code of weight w for inverse scale id (Q8_0: −128...127; Q4_0: 0...15).
    public func code(_ w: Float, inverseScale id: Float) -> Int {
        Int(self == .q8_0 ? squeeze_q8_0_code(w, id) : squeeze_q4_0_code(w, id))
    }

    /// The weight a stored code stands for with the fp16 scale `d`.
    public func value(code: Int, scale d: UInt16) -> Float {
        squeeze_fp16_to_fp32(d) * Float(self == .q8_0 ? code : code - 8)
    }

    /// Writes one block from its fp16 scale and 32 stored codes (ggml's layout).
    public func encodeBlock(scale d: UInt16, codes: UnsafePointer<Int>, into block: UnsafeMutableRawPointer) {
        block.storeBytes(of: d.littleEndian, toByteOffset: 0, as: UInt16.self)
        let q = block.advanced(by: 2).assumingMemoryBound(to: UInt8.self)
        switch self {
        case .q8_0: for j in 0..<32 { q[j] = UInt8(bitPattern: Int8(codes[j])) }
        case .q4_0: for j in 0..<16 { q[j] = UInt8(codes[j]) | UInt8(codes[j + 16]) << 4 }
        }
    }
}

/// fp32 -> fp16 (round to nearest even) and back, as ggml converts block scales.
public func fp16(_ x: Float) -> UInt16 { squeeze_fp32_to_fp16(x) }
public func float(fp16 h: UInt16) -> Float { squeeze_fp16_to_fp32(h) }

/// fp32 -> bf16 (round to nearest even) and back.
public func bf16(_ x: Float) -> UInt16 { squeeze_fp32_to_bf16(x) }
public func float(bf16 b: UInt16) -> Float { squeeze_bf16_to_fp32(b) }
