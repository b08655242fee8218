import Foundation
import Tensor

/// Pruning masks (1 keeps a weight, 0 prunes it). Weights are in HF Conv1D layout `[in, out]`;
/// "per output row" in the papers' `[out, in]` layout is a column here. Ties are broken by
/// position (a stable sort), so masks equal numpy's `argsort(kind="stable")`.
public enum Pruning {
    /// Number of weights pruned at `sparsity` out of `n`: floor(sparsity · n).
    public static func prunedCount(_ n: Int, sparsity: Double) -> Int { Int((sparsity * Double(n)).rounded(.down)) }

    /// Indices ordered by ascending score, ties by index.
    static func stableOrder(_ scores: [Float]) -> [Int] {
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
                let order = idx.indices.sorted { s[idx[$0]] < s[idx[$1]] || (s[idx[$0]] == s[idx[$1]] && $0 < $1) }
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
/// `H = XᵀX + λI` (λ = `percdamp` · mean diag). Mask selection is adaptive per block of
/// `blockSize` inputs, or N:M. Computed in Double. Returns the pruned, updated `[in, out]`
/// weight and its mask.
public func sparseGPT(weight w: [Float], rows inDim: Int, cols outDim: Int, hessian hIn: [Double], sparsity: Double,
                      nm: (Int, Int)? = nil, blockSize: Int = 128, percdamp: Double = 0.01) throws -> (weight: [Float], mask: [Float]) {
    let n = inDim, rowsOut = outDim
    guard hIn.count == n * n else { throw CompressionError.value("sparsegpt", "Hessian has \(hIn.count) entries, expected \(n * n)") }
    // Wt [out, in] in Double.
    var W = [Double](repeating: 0, count: rowsOut * n)
    for j in 0..<n { for o in 0..<rowsOut { W[o * n + j] = Double(w[j * outDim + o]) } }
    var H = hIn
    for j in 0..<n where H[j * n + j] == 0 {
        H[j * n + j] = 1
        for o in 0..<rowsOut { W[o * n + j] = 0 }
    }
    var meanDiag = 0.0
    for j in 0..<n { meanDiag += H[j * n + j] }
    meanDiag /= Double(n)
    for j in 0..<n { H[j * n + j] += percdamp * meanDiag }
    // Hinv = upper Cholesky factor of H⁻¹.
    do { try upperCholeskyOfInverse(&H, n: n) } catch {
        throw CompressionError.numerical("sparsegpt: \(error) for the damped Hessian; use more calibration samples or a larger percdamp")
    }
    let Hinv = H

    var mask = [Bool](repeating: false, count: rowsOut * n)   // true = pruned, [out, in]
    var i1 = 0
    while i1 < n {
        let i2 = min(i1 + blockSize, n), count = i2 - i1
        var W1 = [Double](repeating: 0, count: rowsOut * count)
        for o in 0..<rowsOut { for c in 0..<count { W1[o * count + c] = W[o * n + i1 + c] } }
        var Q1 = [Double](repeating: 0, count: rowsOut * count)
        var Err1 = [Double](repeating: 0, count: rowsOut * count)
        var mask1 = [Bool](repeating: false, count: rowsOut * count)
        if nm == nil {
            var tmp = [Double](repeating: 0, count: rowsOut * count)
            for o in 0..<rowsOut { for c in 0..<count {
                let d = Hinv[(i1 + c) * n + i1 + c]
                tmp[o * count + c] = W1[o * count + c] * W1[o * count + c] / (d * d)
            } }
            let sorted = tmp.sorted()
            let thresh = sorted[min(Int(Double(tmp.count) * sparsity), tmp.count - 1)]
            for k in tmp.indices { mask1[k] = tmp[k] <= thresh }
        }
        for c in 0..<count {
            if let (pn, pm) = nm, c % pm == 0 {
                for o in 0..<rowsOut {
                    let width = min(pm, count - c)
                    let scores = (0..<width).map { k -> Double in
                        let d = Hinv[(i1 + c + k) * n + i1 + c + k]
                        let x = W1[o * count + c + k]
                        return x * x / (d * d)
                    }
                    let order = scores.indices.sorted { scores[$0] < scores[$1] || (scores[$0] == scores[$1] && $0 < $1) }
                    for k in order.prefix(pn) { mask1[o * count + c + k] = true }
                }
            }
            let d = Hinv[(i1 + c) * n + i1 + c]
            for o in 0..<rowsOut {
                let wv = W1[o * count + c]
                let q = mask1[o * count + c] ? 0 : wv
                Q1[o * count + c] = q
                let err = (wv - q) / d
                Err1[o * count + c] = err
                if err != 0 {
                    for k in c..<count { W1[o * count + k] -= err * Hinv[(i1 + c) * n + i1 + k] }
                }
            }
        }
        for o in 0..<rowsOut { for c in 0..<count {
            W[o * n + i1 + c] = Q1[o * count + c]
            mask[o * n + i1 + c] = mask1[o * count + c]
        } }
        // W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
        if i2 < n {
            var hb = [Double](repeating: 0, count: count * (n - i2))
            for c in 0..<count { for k in i2..<n { hb[c * (n - i2) + k - i2] = Hinv[(i1 + c) * n + k] } }
            var upd = [Double](repeating: 0, count: rowsOut * (n - i2))
            dgemm(m: rowsOut, n: n - i2, k: count, a: Err1, b: hb, c: &upd)
            for o in 0..<rowsOut { for k in i2..<n { W[o * n + k] -= upd[o * (n - i2) + k - i2] } }
        }
        i1 = i2
    }
    var out = [Float](repeating: 0, count: w.count), m = [Float](repeating: 1, count: w.count)
    for j in 0..<n { for o in 0..<rowsOut {
        out[j * outDim + o] = Float(W[o * n + j])
        if mask[o * n + j] { m[j * outDim + o] = 0; out[j * outDim + o] = 0 }
    } }
    return (out, m)
}
