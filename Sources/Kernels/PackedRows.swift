import CKernels
import Tensor

/// A read-only linear map of the packed inference model: y [N, outputs] (+)= x [N, inputs] · W,
/// in whatever form W is packed (rows of a packed matrix, HF layout, two factors, Kronecker).
public protocol PackedOperator: AnyObject {
    var inputs: Int { get }
    var outputs: Int { get }
    /// Bytes of weights a forward reads.
    var bytes: Int { get }
    /// FLOPs per row of activations (2 per multiply-add it computes).
    var flops: Double { get }
    /// Scratch floats `apply` needs for N rows.
    func scratchFloats(rows N: Int) -> Int
    func apply(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, scratch: UnsafeMutablePointer<Float>)
}

/// How a packed model keeps the values of its dense and sparse forms: F32 (exact) or BF16 (half
/// the bytes, F32 accumulation). Quantized forms keep their blocks either way.
public enum PackedPrecision: String, CaseIterable, Sendable {
    case f32, bf16
}

/// Memory a packed form owns (freed with it).
public final class PackedBuffer<T> {
    public let pointer: UnsafeMutablePointer<T>
    public let count: Int
    public init(count: Int) {
        self.count = count
        pointer = .allocate(capacity: max(count, 1))
    }
    public convenience init(_ values: [T]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { pointer.initialize(from: $0.baseAddress!, count: values.count) }
    }
    deinit { pointer.deallocate() }
}

/// A read-only matrix `W [rows, cols]` (rows = outputs, cols = inputs: ggml's layout) in one packed
/// storage, with its two kernels: decode (one row of activations: a GEMV that streams the packed
/// bytes, decoded in registers — CKernels, dispatched on the CPU at run time) and prefill (many
/// rows: panels of W decoded to F32, then one sgemm per panel). `apply` picks by the row count.
public final class PackedRows: PackedOperator, @unchecked Sendable {
    /// The packed forms and their buffers (owned by `owner`, or by this object).
    public enum Storage {
        case f32(UnsafePointer<Float>)
        case bf16(UnsafePointer<UInt16>)
        /// IEEE binary16 (a GGUF file's F16 weights, kept as they are).
        case f16(UnsafePointer<UInt16>)
        case quantized(QuantFormat, UnsafeRawPointer)
        /// Unstructured sparse: a bitmask [rows, (cols + 63) / 64] and the kept values, row-major.
        case bitmaskF32(mask: UnsafePointer<UInt64>, values: UnsafePointer<Float>)
        case bitmaskBF16(mask: UnsafePointer<UInt64>, values: UnsafePointer<UInt16>)
        /// 2:4: two values per group of four inputs, and their 2-bit positions.
        case nm24F32(values: UnsafePointer<Float>, positions: UnsafePointer<UInt8>)
        case nm24BF16(values: UnsafePointer<UInt16>, positions: UnsafePointer<UInt8>)
    }

    public let rows: Int, cols: Int
    public let storage: Storage
    /// Bytes of the packed form (what a decode step reads).
    public let bytes: Int
    /// Row starts of a bitmask form ([rows + 1]).
    private let rowStart: [UInt64]
    /// Keeps the buffers alive.
    private let owner: AnyObject?

    public var inputs: Int { cols }
    public var outputs: Int { rows }
    public var flops: Double { 2 * Double(rows * cols) }

    public init(rows: Int, cols: Int, storage: Storage, bytes: Int, owner: AnyObject?) {
        self.rows = rows
        self.cols = cols
        self.storage = storage
        self.bytes = bytes
        self.owner = owner
        switch storage {
        case .bitmaskF32(let mask, _), .bitmaskBF16(let mask, _):
            var starts = [UInt64](repeating: 0, count: rows + 1)
            squeeze_bitmask_row_starts(mask, rows, cols, &starts)
            rowStart = starts
        default: rowStart = []
        }
    }

    /// The activations of a quantized form's GEMV: int8 codes [cols] and an F32 scale per 32
    /// (`squeeze_quantize_activations`), made once per product.
    public struct QuantizedActivations {
        public let codes: UnsafePointer<Int8>, scales: UnsafePointer<Float>
    }

    /// Scratch floats that hold `QuantizedActivations` for `cols` inputs.
    static func activationFloats(cols: Int) -> Int { (cols + 3) / 4 + cols / QuantFormat.blockSize }

    /// x quantized for this form's GEMV into `scratch` (nil: the form multiplies F32 activations).
    public func quantizedActivations(_ x: UnsafePointer<Float>, scratch: UnsafeMutablePointer<Float>) -> QuantizedActivations? {
        guard case .quantized = storage else { return nil }
        let scales = scratch, codes = UnsafeMutableRawPointer(scratch + cols / QuantFormat.blockSize).bindMemory(to: Int8.self, capacity: cols)
        squeeze_quantize_activations(x, codes, scales, cols)
        return QuantizedActivations(codes: codes, scales: scales)
    }

    /// y [rows - range] = W[range] · x for rows `r0 ..< r1` (overwrites y); a quantized form takes
    /// x as `xq` (`quantizedActivations`).
    public func gemv(_ x: UnsafePointer<Float>, quantized xq: QuantizedActivations?, rows r: Range<Int>, into y: UnsafeMutablePointer<Float>) {
        let (r0, r1, c) = (r.lowerBound, r.upperBound, cols)
        rowStart.withUnsafeBufferPointer { rs in
            switch storage {
            case .f32(let w): squeeze_gemv_f32(w, c, r0, r1, x, y)
            case .bf16(let w): squeeze_gemv_bf16(w, c, r0, r1, x, y)
            case .f16(let w): squeeze_gemv_f16(w, c, r0, r1, x, y)
            case .quantized(.q8_0, let b):
                squeeze_gemv_q8_0(b.assumingMemoryBound(to: squeeze_block_q8_0.self), c, r0, r1, xq!.codes, xq!.scales, y)
            case .quantized(.q4_0, let b):
                squeeze_gemv_q4_0(b.assumingMemoryBound(to: squeeze_block_q4_0.self), c, r0, r1, xq!.codes, xq!.scales, y)
            case .bitmaskF32(let m, let v): squeeze_gemv_bitmask_f32(m, v, rs.baseAddress, c, r0, r1, x, y)
            case .bitmaskBF16(let m, let v): squeeze_gemv_bitmask_bf16(m, v, rs.baseAddress, c, r0, r1, x, y)
            case .nm24F32(let v, let p): squeeze_gemv_nm24_f32(v, p, c, r0, r1, x, y)
            case .nm24BF16(let v, let p): squeeze_gemv_nm24_bf16(v, p, c, r0, r1, x, y)
            }
        }
    }

    /// dst [r1 - r0, cols] = rows r0 ..< r1 of W as F32 (exact).
    public func decode(rows r: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        let (r0, r1, c) = (r.lowerBound, r.upperBound, cols)
        rowStart.withUnsafeBufferPointer { rs in
            switch storage {
            case .f32(let w): squeeze_decode_rows_f32(w, c, r0, r1, dst)
            case .bf16(let w): squeeze_decode_rows_bf16(w, c, r0, r1, dst)
            case .f16(let w): squeeze_decode_rows_f16(w, c, r0, r1, dst)
            case .quantized(.q8_0, let b): squeeze_decode_rows_q8_0(b.assumingMemoryBound(to: squeeze_block_q8_0.self), c, r0, r1, dst)
            case .quantized(.q4_0, let b): squeeze_decode_rows_q4_0(b.assumingMemoryBound(to: squeeze_block_q4_0.self), c, r0, r1, dst)
            case .bitmaskF32(let m, let v): squeeze_decode_rows_bitmask_f32(m, v, rs.baseAddress, c, r0, r1, dst)
            case .bitmaskBF16(let m, let v): squeeze_decode_rows_bitmask_bf16(m, v, rs.baseAddress, c, r0, r1, dst)
            case .nm24F32(let v, let p): squeeze_decode_rows_nm24_f32(v, p, c, r0, r1, dst)
            case .nm24BF16(let v, let p): squeeze_decode_rows_nm24_bf16(v, p, c, r0, r1, dst)
            }
        }
    }

    /// Rows per prefill panel: about 8 MiB of decoded F32 (so the sgemm that follows is large
    /// enough to run near peak; a whole block linear of gpt2 is one panel), at least 64.
    public var panelRows: Int { max(64, min(rows, (8 << 20) / (4 * max(cols, 1)))) }

    /// Scratch floats `apply` needs for up to N rows of activations (never fewer for fewer rows:
    /// one row takes the GEMV's output, more a decoded panel).
    public func scratchFloats(rows N: Int) -> Int {
        switch storage {
        case .f32: return max(rows, 0)
        // Without BF16Matmul (no AVX-512 BF16, or SQUEEZE_ISA below it: both can change after
        // packing), BF16 rows take the panel path (decode, then sgemm), so the panel is always counted.
        case .bf16: return max(rows, panelRows * cols)
        case .bitmaskBF16, .nm24BF16: return max(rows, panelRows * cols + (panelRows * cols + 1) / 2)   // + the panel in BF16
        case .quantized: return max(rows + Self.activationFloats(cols: cols), panelRows * cols)
        default: return max(rows, panelRows * cols)
        }
    }

    /// y [N, rows] (+)= x [N, cols] · Wᵀ. One row: the GEMV over row ranges on this rank's
    /// threads (F32 activations, exact products; a quantized form quantizes the row once, by the
    /// Q8_0 rule with F32 scales, and multiplies in integers as ggml does). More rows: dense F32 as one sgemm; BF16 values
    /// (dense, or sparse decoded to BF16 panels) as BF16 products with F32 accumulation where
    /// the CPU has them (`BF16Matmul`: the activations rounded to BF16, as every BF16 GEMM
    /// does); other forms panel by panel (decoded to F32 on every thread, then sgemm).
    public func apply(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                      scratch: UnsafeMutablePointer<Float>) {
        if N == 1 {
            let out = accumulate ? scratch : y
            let xq = quantizedActivations(x, scratch: scratch + rows)
            parallelFor(rows, minChunk: 64) { r in gemv(x, quantized: xq, rows: r, into: out + r.lowerBound) }
            if accumulate { for i in 0..<rows { y[i] += scratch[i] } }
            return
        }
        let beta: Float = accumulate ? 1 : 0
        switch storage {
        case .f32(let w):
            sgemm(transB: true, m: N, n: rows, k: cols, a: x, b: w, beta: beta, c: y)
            return
        case .bf16(let w) where BF16Matmul.isAvailable:
            BF16Matmul.gemm(m: N, n: rows, k: cols, a: x, b: w, transB: true, c: y, beta: beta)
            return
        default: break
        }
        let panel = panelRows
        var bf16Panels = BF16Matmul.isAvailable
        if case .bitmaskBF16 = storage {} else if case .nm24BF16 = storage {} else { bf16Panels = false }
        for r0 in stride(from: 0, to: rows, by: panel) {
            let r1 = min(rows, r0 + panel)
            // The panel decoded on this rank's threads (each its own rows), then one product.
            parallelFor(r1 - r0, minChunk: 16) { rs in decode(rows: (r0 + rs.lowerBound)..<(r0 + rs.upperBound), into: scratch + rs.lowerBound * cols) }
            if bf16Panels {   // the decoded values are BF16 values: converting back is exact
                let h = UnsafeMutableRawPointer(scratch + panel * cols).bindMemory(to: UInt16.self, capacity: (r1 - r0) * cols)
                squeeze_f32_to_bf16_n(scratch, h, (r1 - r0) * cols)
                BF16Matmul.gemm(m: N, n: r1 - r0, k: cols, a: x, b: h, transB: true, c: y + r0, ldc: rows, beta: beta)
            } else {
                sgemm(transB: true, m: N, n: r1 - r0, k: cols, a: x, b: scratch, beta: beta, c: y + r0, ldc: rows)
            }
        }
    }

    /// dst [n, cols] = the rows `ids` of W (embedding lookups).
    public func gather(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>) {
        parallelFor(ids.count, minChunk: 64) { ks in
            for k in ks { let r = Int(ids[k]); decode(rows: r..<(r + 1), into: dst + k * cols) }
        }
    }
}

/// A dense F32 weight in HF layout `W [in, out]`, read where it lies (the parameter buffer, a
/// node-shared window): y = x · W. Decode streams the rows of W over output-column ranges.
public final class PackedHF: PackedOperator, @unchecked Sendable {
    public let inFeatures: Int, outFeatures: Int
    public let weight: UnsafePointer<Float>
    private let owner: AnyObject?
    public var bytes: Int { 4 * inFeatures * outFeatures }
    public var inputs: Int { inFeatures }
    public var outputs: Int { outFeatures }
    public var flops: Double { 2 * Double(inFeatures * outFeatures) }

    public init(_ weight: UnsafePointer<Float>, inFeatures: Int, outFeatures: Int, owner: AnyObject?) {
        self.weight = weight
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.owner = owner
    }

    /// Scratch floats `apply` needs for up to N rows (one row's partial sums, one per thread).
    public func scratchFloats(rows N: Int) -> Int { max(loopThreads, 1) * outFeatures }

    /// y [N, out] (+)= x [N, in] · W. One row: each thread streams a contiguous band of W's rows
    /// (inputs) into its own partial sums, added in thread order.
    public func apply(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                      scratch: UnsafeMutablePointer<Float>) {
        guard N == 1 else {
            sgemm(m: N, n: outFeatures, k: inFeatures, a: x, b: weight, beta: accumulate ? 1 : 0, c: y)
            return
        }
        let (n, m) = (inFeatures, outFeatures), bands = loopWorkers(n, minChunk: 64)
        parallelFor(bands) { ts in
            for t in ts {
                let rows = share(n, rank: t, size: bands)
                squeeze_gemv_f32_io(weight + rows.lowerBound * m, rows.count, m, 0, m, x + rows.lowerBound, scratch + t * m)
            }
        }
        if !accumulate { y.update(repeating: 0, count: m) }
        for t in 0..<bands { for j in 0..<m { y[j] += scratch[t * m + j] } }
    }
}
