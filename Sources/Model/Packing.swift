import CKernels
import Kernels
import Tensor

/// Packing: the trainable forms' weights (HF layout `[in, out]`, F32, masks beside) into the
/// packed inference forms (`PackedRows`: `[out, in]` rows, BF16 or F32 values, a bitmask or 2:4
/// positions, ggml blocks). Each weight form's `packed(params:precision:)` calls these.
enum Packing {
    /// W [in, out] (HF) as rows [out, in] in `precision`.
    static func rows(_ w: UnsafePointer<Float>, inFeatures n: Int, outFeatures m: Int, precision: PackedPrecision) -> PackedRows {
        let t = PackedBuffer<Float>(count: n * m)
        transpose(w, rows: n, cols: m, into: t.pointer)
        guard precision == .bf16 else { return PackedRows(rows: m, cols: n, storage: .f32(t.pointer), bytes: 4 * n * m, owner: t) }
        let b = PackedBuffer<UInt16>(count: n * m)
        squeeze_f32_to_bf16_n(t.pointer, b.pointer, n * m)
        return PackedRows(rows: m, cols: n, storage: .bf16(b.pointer), bytes: 2 * n * m, owner: b)
    }

    /// A row-major [rows, cols] matrix that already is in rows layout (a low-rank W1 [out, r]),
    /// read where it lies in F32 or converted to BF16.
    static func rowMajor(_ w: UnsafePointer<Float>, rows m: Int, cols n: Int, precision: PackedPrecision, owner: AnyObject?) -> PackedRows {
        guard precision == .bf16 else { return PackedRows(rows: m, cols: n, storage: .f32(w), bytes: 4 * n * m, owner: owner) }
        let b = PackedBuffer<UInt16>(count: n * m)
        squeeze_f32_to_bf16_n(w, b.pointer, n * m)
        return PackedRows(rows: m, cols: n, storage: .bf16(b.pointer), bytes: 2 * n * m, owner: b)
    }

    /// A masked W [in, out] (HF) as a sparse form: 2:4 (two values and their positions per group
    /// of four inputs) when `nm24` says the mask is 2:4, else a bitmask and the kept values. With
    /// `rowsLayout`, W and its mask already are [out, in] rows (the embedding [V, C]).
    static func sparse(_ w: UnsafePointer<Float>, mask: BitMask, inFeatures n: Int, outFeatures m: Int, nm24: Bool,
                       precision: PackedPrecision, rowsLayout: Bool = false) throws -> PackedRows {
        let t = PackedBuffer<Float>(count: n * m)
        if rowsLayout { t.pointer.update(from: w, count: n * m) } else { transpose(w, rows: n, cols: m, into: t.pointer) }
        for o in 0..<m { for i in 0..<n where !mask[rowsLayout ? o * n + i : i * m + o] { t.pointer[o * n + i] = 0 } }
        if nm24 {
            let values = PackedBuffer<Float>(count: m * n / 2), positions = PackedBuffer<UInt8>(count: m * squeeze_nm24_position_bytes(n))
            var badRow = 0, badGroup = 0
            guard squeeze_nm24_pack_f32(t.pointer, m, n, values.pointer, positions.pointer, &badRow, &badGroup) == 0 else {
                throw ModelError.input("not 2:4: output \(badRow) keeps more than 2 of the inputs \(4 * badGroup)..<\(4 * badGroup + 4)")
            }
            let positionBytes = m * squeeze_nm24_position_bytes(n)
            guard precision == .bf16 else {
                return PackedRows(rows: m, cols: n, storage: .nm24F32(values: values.pointer, positions: positions.pointer),
                                  bytes: 2 * n * m + positionBytes, owner: [values, positions] as AnyObject)
            }
            let b = PackedBuffer<UInt16>(count: m * n / 2)
            squeeze_f32_to_bf16_n(values.pointer, b.pointer, m * n / 2)
            return PackedRows(rows: m, cols: n, storage: .nm24BF16(values: b.pointer, positions: positions.pointer),
                              bytes: n * m + positionBytes, owner: [b, positions] as AnyObject)
        }
        let wpr = (n + 63) / 64
        let bits = PackedBuffer<UInt64>(count: m * wpr)
        bits.pointer.initialize(repeating: 0, count: m * wpr)
        var kept: [Float] = []
        kept.reserveCapacity(mask.kept)
        for o in 0..<m {
            for i in 0..<n where mask[rowsLayout ? o * n + i : i * m + o] {
                bits.pointer[o * wpr + i / 64] |= 1 << UInt64(i % 64)
                kept.append(t.pointer[o * n + i])
            }
        }
        if precision == .f32 {
            let v = PackedBuffer<Float>(kept)
            return PackedRows(rows: m, cols: n, storage: .bitmaskF32(mask: bits.pointer, values: v.pointer), bytes: 8 * m * wpr + 4 * kept.count,
                              owner: [bits, v] as AnyObject)
        }
        let v = PackedBuffer<UInt16>(count: kept.count)
        squeeze_f32_to_bf16_n(kept, v.pointer, kept.count)
        return PackedRows(rows: m, cols: n, storage: .bitmaskBF16(mask: bits.pointer, values: v.pointer), bytes: 8 * m * wpr + 2 * kept.count,
                          owner: [bits, v] as AnyObject)
    }

    /// ggml blocks `[rows, cols / 32]` as they are (kept alive by `owner`).
    static func quantized(_ blocks: UnsafeRawPointer, format: QuantFormat, rows: Int, cols: Int, owner: AnyObject) -> PackedRows {
        PackedRows(rows: rows, cols: cols, storage: .quantized(format, blocks), bytes: format.bytes(rows * cols), owner: owner)
    }
}

/// src [rows, cols] -> dst [cols, rows].
func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelFor(cols, minChunk: 64) { cs in
        for c in cs { for r in 0..<rows { dst[c * rows + r] = src[r * cols + c] } }
    }
}

/// W = W0 W1ᵀ packed: h [N, r] = x · W0, then y (+)= h · W1ᵀ (two GEMMs, or two GEMVs).
final class PackedLowRank: PackedOperator {
    let first: PackedOperator, second: PackedOperator
    init(first: PackedOperator, second: PackedOperator) { self.first = first; self.second = second }
    var inputs: Int { first.inputs }
    var outputs: Int { second.outputs }
    var bytes: Int { first.bytes + second.bytes }
    var flops: Double { first.flops + second.flops }
    func scratchFloats(rows N: Int) -> Int { Arena.rounded(N * first.outputs) + max(first.scratchFloats(rows: N), second.scratchFloats(rows: N)) }
    func apply(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
        let h = scratch, rest = scratch + Arena.rounded(N * first.outputs)
        first.apply(x, N: N, into: h, accumulate: false, scratch: rest)
        second.apply(h, N: N, into: y, accumulate: accumulate, scratch: rest)
    }
}

/// Σ_i A_i ⊗ B_i packed: the factors concatenated once (`KroneckerProduct`'s layout), so a pass
/// is the two GEMMs over all terms and their permutations, nothing rebuilt per call.
final class PackedKronecker: PackedOperator {
    let shape: KroneckerShape, terms: Int
    let aCat: PackedBuffer<Float>, bCat: PackedBuffer<Float>
    init(shape: KroneckerShape, a: [[Float]], b: [[Float]]) {
        self.shape = shape
        terms = a.count
        aCat = PackedBuffer(count: terms * shape.m1 * shape.n1)
        bCat = PackedBuffer(count: terms * shape.m2 * shape.n2)
        KroneckerProduct.concatenate(a: a, b: b, shape: shape, aCat: aCat.pointer, bCat: bCat.pointer)
    }
    var inputs: Int { shape.m1 * shape.m2 }
    var outputs: Int { shape.n1 * shape.n2 }
    var bytes: Int { 4 * (aCat.count + bCat.count) }
    /// The two GEMMs over all terms: terms · (1/m1 + 1/n2) of the dense FLOPs.
    var flops: Double {
        let s = shape
        let first: Int = s.bFirst ? s.m1 * s.m2 * s.n2 : s.m1 * s.n1 * s.m2
        let second: Int = s.bFirst ? s.m1 * s.n1 * s.n2 : s.n1 * s.m2 * s.n2
        return 2 * Double(terms) * Double(first + second)
    }
    func scratchFloats(rows N: Int) -> Int {
        Arena.floats { KroneckerProduct.intermediate($0, shape: shape, terms: terms, rows: N); KroneckerProduct.forwardScratch($0, shape, terms, N) }
    }
    func apply(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, scratch: UnsafeMutablePointer<Float>) {
        if !accumulate { y.update(repeating: 0, count: N * outputs) }
        let a = Arena(base: scratch)
        let saved = KroneckerProduct.Saved(aCat: aCat.pointer, bCat: bCat.pointer, mid: KroneckerProduct.intermediate(a, shape: shape, terms: terms, rows: N))
        KroneckerProduct.forward(x, N: N, out: y, shape: shape, terms: terms, saved: saved, scratch: a)
    }
}
