import Foundation
import Model
import Tensor

/// Whitened (data-aware) low rank: the rank-k `Ŵ` of least output error ‖X(W − Ŵ)‖_F on the
/// calibration inputs X, not least weight error ‖W − Ŵ‖_F.
///
/// With H = XᵀX + λI = L Lᵀ (λ = `percdamp` · mean diag XᵀX, the dampening SparseGPT and GPTQ
/// use, so inputs that never fired leave H positive definite), ‖X(W − Ŵ)‖²_F ≈ tr((W − Ŵ)ᵀ H (W − Ŵ))
/// = ‖Lᵀ(W − Ŵ)‖²_F. By Eckart–Young on LᵀW = U Σ Vᵀ the least is Σ_{i>k} σ_i², reached by
/// Ŵ = L⁻ᵀ U_k Σ_k Vₖᵀ, split as W0 = L⁻ᵀ U_k Σ_k^{1/2} [in, k], W1 = V_k Σ_k^{1/2} [out, k]
/// (`LowRankComponent`'s W0 W1ᵀ). Everything in Double; the factors are rounded at the end.
public enum Whitening {
    /// XᵀX + λI (row-major n x n) with λ = `percdamp` · mean diag(XᵀX); the identity when XᵀX is 0.
    public static func damped(_ h: [Double], n: Int, percdamp: Double) -> [Double] {
        var d = h
        let mean = (0..<n).reduce(0.0) { $0 + h[$1 * n + $1] } / Double(max(n, 1))
        let lambda = mean > 0 ? percdamp * mean : 1
        for i in 0..<n { d[i * n + i] += lambda }
        return d
    }

    /// The lower Cholesky factor L of a damped Gram matrix (H = L Lᵀ), with an error naming `what`.
    public static func cholesky(_ h: [Double], n: Int, what: String) throws -> [Double] {
        var l = h
        do { try lowerCholesky(&l, n: n) } catch {
            throw CompressionError.numerical("\(what): \(error) for the damped XᵀX; use more calibration samples or a larger percdamp")
        }
        return l
    }

    /// The whitened rank-k truncation of a weight.
    public struct LowRankResult {
        /// W0 = L⁻ᵀ U_k Σ_k^{1/2} [in, k] and W1 = V_k Σ_k^{1/2} [out, k].
        public var w0: Tensor, w1: Tensor
        /// Every singular value of LᵀW (descending).
        public var singularValues: [Double]
        /// ‖Lᵀ(W − Ŵ)‖_F = sqrt(Σ_{i>k} σ_i²) and ‖LᵀW‖_F (the output error of Ŵ, and of 0).
        public var error: Double, total: Double
    }

    /// LᵀW [in, out] in Double, for W [in, out] and the lower factor L [in, in].
    static func whitened(_ w: Tensor, cholesky l: [Double]) -> [Double] {
        let m = w.shape[0], n = w.shape[1]
        var x = w.data.map(Double.init)
        l.withUnsafeBufferPointer { lp in x.withUnsafeMutableBufferPointer { lowerTriangular(lp.baseAddress!, n: m, transposed: true, inverse: false, $0.baseAddress!, cols: n) } }
        return x
    }

    /// The singular values of LᵀW (descending): what each rank removes from the output error, σ_i².
    public static func spectrum(_ w: Tensor, cholesky l: [Double]) throws -> [Double] {
        try svdDouble(whitened(w, cholesky: l), rows: w.shape[0], cols: w.shape[1], valuesOnly: true).S
    }

    /// The whitened truncation at the rank `rank` picks from the whitened spectrum (clamped to
    /// 1...min(in, out)).
    public static func lowRank(_ w: Tensor, cholesky l: [Double], rank: ([Double]) -> Int) throws -> LowRankResult {
        let m = w.shape[0], n = w.shape[1], full = min(m, n)
        let svd = try svdDouble(whitened(w, cholesky: l), rows: m, cols: n)
        let r = min(max(rank(svd.S), 1), full)
        // W0 = L⁻ᵀ (U_r √Σ_r) [m, r]; W1 = V_r √Σ_r [n, r].
        var left = [Double](repeating: 0, count: m * r), right = [Float](repeating: 0, count: n * r)
        for j in 0..<r {
            let root = svd.S[j].squareRoot()
            for i in 0..<m { left[i * r + j] = svd.U[i * full + j] * root }
            for i in 0..<n { right[i * r + j] = Float(svd.Vt[j * n + i] * root) }
        }
        l.withUnsafeBufferPointer { lp in left.withUnsafeMutableBufferPointer { lowerTriangular(lp.baseAddress!, n: m, transposed: true, inverse: true, $0.baseAddress!, cols: r) } }
        let tail = svd.S.dropFirst(r).reduce(0.0) { $0 + $1 * $1 }, total = svd.S.reduce(0.0) { $0 + $1 * $1 }
        return LowRankResult(w0: try Tensor(shape: [m, r], data: left.map(Float.init)), w1: try Tensor(shape: [n, r], data: right),
                             singularValues: svd.S, error: tail.squareRoot(), total: total.squareRoot())
    }

    /// tr(Dᵀ H D) for D = W − Ŵ (both [in, out]) and H [in, in]: the output error ‖X D‖²_F when
    /// H = XᵀX.
    public static func outputError(_ w: Tensor, _ approx: Tensor, gram h: [Double]) -> Double {
        let m = w.shape[0], n = w.shape[1]
        let d = zip(w.data, approx.data).map { Double($0) - Double($1) }
        return quadratic(d, h, rows: m, cols: n)
    }

    /// tr(Dᵀ H D) for D [m, n] and H [m, m], Double.
    static func quadratic(_ d: [Double], _ h: [Double], rows m: Int, cols n: Int) -> Double {
        var hd = [Double](repeating: 0, count: m * n)
        dgemm(m: m, n: n, k: m, a: h, b: d, c: &hd)
        return zip(d, hd).reduce(0.0) { $0 + $1.0 * $1.1 }
    }
}
