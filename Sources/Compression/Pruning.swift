import Foundation
import Tensor

/// Pruning masks (1 keeps a weight, 0 prunes it). Weights are in HF Conv1D layout `[in, out]`;
/// "per output row" in the papers' `[out, in]` layout is a column here. Ties are broken by
/// position (a stable sort), so masks equal numpy's `argsort(kind="stable")`.
public enum Pruning {
    /// Number of weights pruned at `sparsity` out of `n`: floor(sparsity · n).
    public static func prunedCount(_ n: Int, sparsity: Double) -> Int { Int((sparsity * Double(n)).rounded(.down)) }

    /// Indices ordered by ascending score, ties by index (numpy's `argsort(kind="stable")`).
    static func stableOrder<T: Comparable>(_ scores: [T]) -> [Int] {
        scores.indices.sorted { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
    }

    /// Magnitude pruning of one matrix: the floor(s·n) smallest |w| are pruned.
    public static func magnitudeMask(_ w: [Float], sparsity: Double) -> [Float] {
        var mask = [Float](repeating: 1, count: w.count)
        for i in stableOrder(w.map(abs)).prefix(prunedCount(w.count, sparsity: sparsity)) { mask[i] = 0 }
        return mask
    }

    /// Global magnitude pruning: one threshold over all matrices (concatenated in order).
    public static func globalMagnitudeMasks(_ ws: [[Float]], sparsity: Double) -> [[Float]] {
        let all = ws.flatMap { $0.map(abs) }
        var flat = [Float](repeating: 1, count: all.count)
        for i in stableOrder(all).prefix(prunedCount(all.count, sparsity: sparsity)) { flat[i] = 0 }
        var out: [[Float]] = []
        var o = 0
        for w in ws { out.append(Array(flat[o..<(o + w.count)])); o += w.count }
        return out
    }

    /// N:M sparsity: in every group of M consecutive inputs of each output column keep the N
    /// largest |w| (prune the M − N smallest, ties by position). `w` is `[rows = in, cols = out]`.
    public static func nmMask(_ w: [Float], rows: Int, cols: Int, n: Int = 2, m: Int = 4, scores: [Float]? = nil) throws -> [Float] {
        guard m > 0, n >= 0, n <= m else { throw CompressionError.value("n:m", "needs 0 <= n <= m, got \(n):\(m)") }
        guard rows % m == 0 else { throw CompressionError.value("n:m", "input dimension \(rows) is not a multiple of m = \(m)") }
        let s = scores ?? w.map(abs)
        var mask = [Float](repeating: 1, count: w.count)
        for o in 0..<cols {
            for g in stride(from: 0, to: rows, by: m) {
                let idx = (0..<m).map { (g + $0) * cols + o }
                let order = stableOrder(idx.map { s[$0] })
                for k in order.prefix(m - n) { mask[idx[k]] = 0 }
            }
        }
        return mask
    }

    /// Wanda (Sun et al. 2023): score |W_jo| · ||X_j||₂ with X the calibration inputs `[tokens, in]`;
    /// in each output column prune floor(s · in) lowest scores (or N:M groups when given).
    public static func wandaMask(_ w: [Float], rows: Int, cols: Int, inputNorms: [Double], sparsity: Double, nm: (Int, Int)? = nil) throws -> [Float] {
        guard inputNorms.count == rows else { throw CompressionError.value("wanda", "\(inputNorms.count) input norms for \(rows) inputs") }
        var score = [Float](repeating: 0, count: w.count)
        for j in 0..<rows { for o in 0..<cols { score[j * cols + o] = Float(Double(abs(w[j * cols + o])) * inputNorms[j]) } }
        if let (n, m) = nm { return try nmMask(w, rows: rows, cols: cols, n: n, m: m, scores: score) }
        var mask = [Float](repeating: 1, count: w.count)
        let k = prunedCount(rows, sparsity: sparsity)
        for o in 0..<cols {
            let col = (0..<rows).map { score[$0 * cols + o] }
            for j in stableOrder(col).prefix(k) { mask[j * cols + o] = 0 }
        }
        return mask
    }

    /// Gradual schedule (Zhu & Gupta 2017): s_t = s_f + (s_i − s_f)(1 − t/T)³ for t in [0, T].
    public static func cubicSparsity(step t: Int, steps T: Int, initial si: Double, final sf: Double) -> Double {
        guard T > 0 else { return sf }
        let p = min(max(Double(t) / Double(T), 0), 1)
        return sf + (si - sf) * pow(1 - p, 3)
    }

    /// Fraction of zeros in a mask.
    public static func sparsity(of mask: [Float]) -> Double {
        Double(mask.reduce(0) { $0 + ($1 == 0 ? 1 : 0) }) / Double(max(mask.count, 1))
    }
}

/// SparseGPT (Frantar & Alistarh 2023): prunes columns left to right (in the `[out, in]` view)
/// and updates the not-yet-pruned weights with the OBS correction from the inverse Hessian
/// `H = XᵀX + λI` (`OBSSweep`). Mask selection is adaptive per block of `blockSize` inputs (the
/// `sparsity` fraction of the lowest w²/d² in the block), or N:M. Returns the pruned, updated
/// `[in, out]` weight and its mask.
public func sparseGPT(weight w: [Float], rows inDim: Int, cols outDim: Int, hessian: [Double], sparsity: Double,
                      nm: (Int, Int)? = nil, blockSize: Int = 128, percdamp: Double = 0.01) throws -> (weight: [Float], mask: [Float]) {
    var sweep = try OBSSweep(weight: w, inputs: inDim, outputs: outDim, hessian: hessian, percdamp: percdamp, method: "sparsegpt")
    let n = inDim
    var pruned = [Bool](repeating: false, count: outDim * n)   // [out, in]
    let diagonal = (0..<n).map { sweep.diagonal($0) }
    func saliency(_ x: Double, _ j: Int) -> Double { x * x / (diagonal[j] * diagonal[j]) }
    sweep.run(blockSize: blockSize, startBlock: { block, W1 in
        guard nm == nil else { return }
        // Adaptive: the lowest `sparsity` fraction of the block's saliencies.
        let count = block.count
        let scores = (0..<(outDim * count)).map { saliency(W1[$0], block.lowerBound + $0 % count) }
        let thresh = scores.sorted()[min(Int(Double(scores.count) * sparsity), scores.count - 1)]
        for k in scores.indices where scores[k] <= thresh { pruned[(k / count) * n + block.lowerBound + k % count] = true }
    }, keep: { o, j, c, W1 in
        if let (pn, pm) = nm, c % pm == 0 {
            // N:M: prune the pn of each group of pm with the lowest saliency (ties by position).
            let count = W1.count / outDim, width = min(pm, count - c)
            let order = Pruning.stableOrder((0..<width).map { saliency(W1[o * count + c + $0], j + $0) })
            for k in order.prefix(pn) { pruned[o * n + j + k] = true }
        }
        return pruned[o * n + j] ? 0 : W1[o * (W1.count / outDim) + c]
    })
    var out = sweep.weight, mask = [Float](repeating: 1, count: w.count)
    for j in 0..<n { for o in 0..<outDim where pruned[o * n + j] { mask[j * outDim + o] = 0; out[j * outDim + o] = 0 } }
    return (out, mask)
}
