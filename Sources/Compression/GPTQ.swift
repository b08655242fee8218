import Kernels
import Tensor

/// What GPTQ (optionally with SparseGPT's pruning in the same sweep) made of a weight.
public struct GPTQResult {
    /// The weight on the grid, HF layout `[in, out]` (pruned weights exactly 0).
    public var weight: [Float]
    /// ggml blocks, `out` rows of `in / 32` blocks each.
    public var blocks: [UInt8]
    /// The pruning mask (1 kept) when the sweep also pruned.
    public var mask: [Float]?
}

/// GPTQ (Frantar et al. 2023) on ggml's block grid: the `OBSSweep` quantizes the inputs column by
/// column, each weight to its block's grid (Q8_0 or Q4_0: 32 consecutive inputs of one output,
/// one fp16 scale), and feeds the error back through the inverse Hessian, in lazy blocks of
/// `blockSize` columns. A block's scale is ggml's rule on its weights as they stand when the
/// sweep reaches its first column (natural order); with `activationOrder`, columns go by
/// descending XᵀX diagonal and every scale is fixed up front from the weights (static groups,
/// since ggml's blocks are contiguous). With `prune`, the same sweep prunes as SparseGPT does
/// (adaptive per block, or N:M) and quantizes only the kept weights (SparseGPT's joint mode).
public func gptq(weight w: [Float], rows inDim: Int, cols outDim: Int, hessian: [Double], format: QuantFormat,
                 activationOrder: Bool = false, blockSize: Int = 128, percdamp: Double = 0.01,
                 prune: (sparsity: Double, nm: (Int, Int)?)? = nil) throws -> GPTQResult {
    let n = inDim, QK = QuantFormat.blockSize
    guard n % QK == 0 else { throw CompressionError.value("gptq", "\(n) inputs are not a multiple of \(QK)") }
    guard !(activationOrder && prune != nil) else { throw CompressionError.value("gptq", "activation order cannot prune in the same sweep (N:M groups and blocks follow the stored order)") }
    // Column order: natural, or by descending diag(H) (stable). The sweep runs on the permuted weight.
    let perm = activationOrder ? (0..<n).sorted { hessian[$0 * n + $0] > hessian[$1 * n + $1] || (hessian[$0 * n + $0] == hessian[$1 * n + $1] && $0 < $1) }
                               : Array(0..<n)
    let (pw, ph) = permuted(w, hessian, perm, inputs: n, outputs: outDim)
    var sweep = try OBSSweep(weight: pw, inputs: n, outputs: outDim, hessian: ph, percdamp: percdamp, method: "gptq")
    // Scales (F32 before fp16 rounding) per output row and block of original columns.
    var scales = [Float](repeating: 0, count: outDim * n / QK)
    if activationOrder {
        var row = [Float](repeating: 0, count: n)
        for o in 0..<outDim {
            for j in 0..<n { row[perm[j]] = Float(sweep.W[o * n + j]) }
            for g in 0..<(n / QK) { scales[o * n / QK + g] = row.withUnsafeBufferPointer { format.scale($0.baseAddress! + g * QK) } }
        }
    }
    var codes = [Int](repeating: 0, count: outDim * n)            // [out, original column]
    var pruned = [Bool](repeating: false, count: outDim * n)      // [out, swept column]
    let diagonal = (0..<n).map { sweep.diagonal($0) }
    func saliency(_ x: Double, _ j: Int) -> Double { x * x / (diagonal[j] * diagonal[j]) }
    sweep.run(blockSize: blockSize, startBlock: { block, W1 in
        guard let p = prune, p.nm == nil else { return }
        let count = block.count
        let scores = (0..<(outDim * count)).map { saliency(W1[$0], block.lowerBound + $0 % count) }
        let thresh = scores.sorted()[min(Int(Double(scores.count) * p.sparsity), scores.count - 1)]
        for k in scores.indices where scores[k] <= thresh { pruned[(k / count) * n + block.lowerBound + k % count] = true }
    }, keep: { o, j, c, W1 in
        let count = W1.count / outDim
        if let (pn, pm) = prune?.nm, c % pm == 0 {
            let width = min(pm, count - c)
            for k in Pruning.stableOrder((0..<width).map { saliency(W1[o * count + c + $0], j + $0) }).prefix(pn) { pruned[o * n + j + k] = true }
        }
        let original = perm[j], g = o * n / QK + original / QK
        if !activationOrder && original % QK == 0 {
            // The block's scale from its weights as they stand now (pruned ones as 0).
            var x = (0..<QK).map { Float(pruned[o * n + j + $0] ? 0 : W1[o * count + c + $0]) }
            scales[g] = format.scale(&x)
        }
        if pruned[o * n + j] { codes[o * n + original] = format == .q8_0 ? 0 : 8; return 0 }
        let d = scales[g], id: Float = d != 0 ? 1 / d : 0
        let code = format.code(Float(W1[o * count + c]), inverseScale: id)
        codes[o * n + original] = code
        return Double(format.value(code: code, scale: fp16(d)))
    })
    return result(sweep, perm: perm, codes: codes, scales: scales, pruned: prune == nil ? nil : pruned, format: format, outputs: outDim)
}

/// The weight [in, out] with its inputs (rows) and the Hessian reordered by `perm`.
private func permuted(_ w: [Float], _ h: [Double], _ perm: [Int], inputs n: Int, outputs m: Int) -> ([Float], [Double]) {
    if perm.enumerated().allSatisfy({ $0.offset == $0.element }) { return (w, h) }
    var pw = w, ph = h
    for (j, pj) in perm.enumerated() {
        for o in 0..<m { pw[j * m + o] = w[pj * m + o] }
        for (k, pk) in perm.enumerated() { ph[j * n + k] = h[pj * n + pk] }
    }
    return (pw, ph)
}

/// The swept weight back in original column order, its ggml blocks, and the mask.
private func result(_ sweep: OBSSweep, perm: [Int], codes: [Int], scales: [Float], pruned: [Bool]?, format: QuantFormat, outputs m: Int) -> GPTQResult {
    let n = sweep.inputs, QK = QuantFormat.blockSize, swept = sweep.weight
    var weight = [Float](repeating: 0, count: n * m), mask: [Float]? = pruned == nil ? nil : [Float](repeating: 1, count: n * m)
    for (j, pj) in perm.enumerated() {
        for o in 0..<m {
            weight[pj * m + o] = swept[j * m + o]
            if pruned?[o * n + j] == true { mask![pj * m + o] = 0; weight[pj * m + o] = 0 }
        }
    }
    var blocks = [UInt8](repeating: 0, count: format.bytes(n * m))
    blocks.withUnsafeMutableBytes { raw in
        codes.withUnsafeBufferPointer { c in
            for o in 0..<m {
                for g in 0..<(n / QK) {
                    format.encodeBlock(scale: fp16(scales[o * n / QK + g]), codes: c.baseAddress! + o * n + g * QK,
                                       into: raw.baseAddress! + (o * n / QK + g) * format.blockBytes)
                }
            }
        }
    }
    return GPTQResult(weight: weight, blocks: blocks, mask: mask)
}
