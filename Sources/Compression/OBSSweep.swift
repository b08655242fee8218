import Tensor

/// The column sweep SparseGPT and GPTQ share (Frantar & Alistarh 2022/2023): the weight, viewed
/// `[out, in]`, is processed column by column (input by input) in blocks of `blockSize`; each
/// column's entries are replaced by what the method keeps (0 when pruned, the grid value when
/// quantized, both when joint) and the error, scaled by the inverse Hessian, is fed back into
/// the columns still to come — within the block at once, to the rest lazily after the block (one
/// GEMM). `H = XᵀX + λI` (λ = `percdamp` · mean diag) from calibration inputs X; the sweep uses
/// the upper Cholesky factor of H⁻¹. Computed in Double.
struct OBSSweep {
    /// Inputs (columns of the `[out, in]` view) and outputs (its rows).
    let inputs: Int, outputs: Int
    /// The weight `[out, in]`, updated as the sweep goes.
    private(set) var W: [Double]
    /// Upper Cholesky factor of (H + λI)⁻¹, `[in, in]` row-major.
    let Hinv: [Double]

    /// Prepares the sweep of `w [in, out]` (HF layout) with Hessian `hessian [in, in]`. Inputs that
    /// never fired (zero diagonal) get weight 0 and a unit diagonal, as the reference code does.
    init(weight w: [Float], inputs n: Int, outputs: Int, hessian: [Double], percdamp: Double, method: String) throws {
        guard hessian.count == n * n else { throw CompressionError.value(method, "Hessian has \(hessian.count) entries, expected \(n * n)") }
        inputs = n
        self.outputs = outputs
        var W = [Double](repeating: 0, count: outputs * n)
        for j in 0..<n { for o in 0..<outputs { W[o * n + j] = Double(w[j * outputs + o]) } }
        var H = hessian
        for j in 0..<n where H[j * n + j] == 0 {
            H[j * n + j] = 1
            for o in 0..<outputs { W[o * n + j] = 0 }
        }
        let meanDiag = (0..<n).reduce(0.0) { $0 + H[$1 * n + $1] } / Double(n)
        for j in 0..<n { H[j * n + j] += percdamp * meanDiag }
        do { try upperCholeskyOfInverse(&H, n: n) } catch {
            throw CompressionError.numerical("\(method): \(error) for the damped Hessian; use more calibration samples or a larger percdamp")
        }
        self.W = W
        Hinv = H
    }

    /// The diagonal of the inverse Hessian factor at input j (the OBS saliency's denominator).
    func diagonal(_ j: Int) -> Double { Hinv[j * inputs + j] }

    /// Runs the sweep. `startBlock(block, W1)` sees each block's columns `[out, count]` before any
    /// is processed (adaptive mask selection); `keep(o, j, c, W1)` returns the value kept for row
    /// o at input j (column c of the block), with the errors of earlier columns already fed back
    /// into W1.
    mutating func run(blockSize: Int, startBlock: (Range<Int>, UnsafeBufferPointer<Double>) -> Void,
                      keep: (_ o: Int, _ j: Int, _ c: Int, _ W1: UnsafeBufferPointer<Double>) -> Double) {
        let n = inputs, rows = outputs
        var i1 = 0
        while i1 < n {
            let i2 = min(i1 + blockSize, n), count = i2 - i1
            var W1 = [Double](repeating: 0, count: rows * count), Err1 = [Double](repeating: 0, count: rows * count)
            for o in 0..<rows { for c in 0..<count { W1[o * count + c] = W[o * n + i1 + c] } }
            W1.withUnsafeBufferPointer { startBlock(i1..<i2, $0) }
            for c in 0..<count {
                let d = Hinv[(i1 + c) * n + i1 + c]
                for o in 0..<rows {
                    let wv = W1[o * count + c]
                    let q = W1.withUnsafeBufferPointer { keep(o, i1 + c, c, $0) }
                    W[o * n + i1 + c] = q
                    let err = (wv - q) / d
                    Err1[o * count + c] = err
                    if err != 0 { for k in c..<count { W1[o * count + k] -= err * Hinv[(i1 + c) * n + i1 + k] } }
                }
            }
            // W[:, i2:] -= Err1 · Hinv[i1:i2, i2:]
            if i2 < n {
                var hb = [Double](repeating: 0, count: count * (n - i2))
                for c in 0..<count { for k in i2..<n { hb[c * (n - i2) + k - i2] = Hinv[(i1 + c) * n + k] } }
                var upd = [Double](repeating: 0, count: rows * (n - i2))
                dgemm(m: rows, n: n - i2, k: count, a: Err1, b: hb, c: &upd)
                for o in 0..<rows { for k in i2..<n { W[o * n + k] -= upd[o * (n - i2) + k - i2] } }
            }
            i1 = i2
        }
    }

    /// The swept weight back in HF layout `[in, out]`.
    var weight: [Float] {
        var out = [Float](repeating: 0, count: W.count)
        for j in 0..<inputs { for o in 0..<outputs { out[j * outputs + o] = Float(W[o * inputs + j]) } }
        return out
    }
}
