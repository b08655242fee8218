import Foundation
import Model
import Tensor

/// Nearest Kronecker product (Van Loan & Pitsianis 1993).
///
/// `W [m1·m2, n1·n2]` (HF layout) is rearranged into `R(W) [m1·n1, m2·n2]` with
/// `R[a·n1 + c, b·n2 + d] = W[a·m2 + b, c·n2 + d]`: each `m2 x n2` block of W becomes a row.
/// `‖W − Σ A_i ⊗ B_i‖_F = ‖R − Σ vec(A_i) vec(B_i)ᵀ‖_F`, so the best k-term approximation
/// comes from the top k singular triplets of R, and its error is `sqrt(Σ_{i>k} σ_i²)`.
public enum NearestKronecker {
    /// The rearrangement R(W).
    public static func rearrange(_ w: Tensor, _ s: KroneckerShape) throws -> Tensor {
        guard w.shape == [s.m1 * s.m2, s.n1 * s.n2] else {
            throw CompressionError.value("kronecker", "shape \(w.shape) is not [\(s.m1)·\(s.m2), \(s.n1)·\(s.n2)]")
        }
        let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
        var r = [Float](repeating: 0, count: w.count)
        let outCols = n1 * n2
        w.data.withUnsafeBufferPointer { src in
            r.withUnsafeMutableBufferPointer { dst in
                for a in 0..<m1 { for b in 0..<m2 {
                    let row = (a * m2 + b) * outCols
                    for c in 0..<n1 {
                        let rrow = (a * n1 + c) * (m2 * n2) + b * n2
                        for d in 0..<n2 { dst[rrow + d] = src[row + c * n2 + d] }
                    }
                } }
            }
        }
        return try Tensor(shape: [m1 * n1, m2 * n2], data: r)
    }

    /// Result of a k-term factorization: factors, the singular values of R(W), and the error.
    public struct Result {
        public var a: [Tensor]   // [m1, n1] each
        public var b: [Tensor]   // [m2, n2] each
        /// All singular values of R(W) when a full SVD ran, else the top `terms`.
        public var singularValues: [Float]
        /// ‖W − Σ A_i ⊗ B_i‖_F = sqrt(Σ_{i>k} σ_i²).
        public var error: Double
    }

    /// Best `terms`-term approximation. Uses the randomized SVD when `terms` is small against
    /// R's smaller side, a full LAPACK SVD otherwise; the error comes from R's full spectrum.
    public static func factorize(_ w: Tensor, shape s: KroneckerShape, terms: Int, randomizedBelow: Double = 0.1, seed: UInt64 = 0) throws -> Result {
        let r = try rearrange(w, s)
        let minDim = min(r.shape[0], r.shape[1])
        guard terms >= 1 && terms <= minDim else {
            throw CompressionError.value("kronecker.terms", "must be between 1 and \(minDim) for factors [\(s.m1), \(s.n1)] ⊗ [\(s.m2), \(s.n2)], got \(terms)")
        }
        let randomized = Double(terms) < randomizedBelow * Double(minDim) && minDim > 64
        let full = randomized ? nil : try r.svd()
        let svd = try full?.truncated(to: terms) ?? r.randomizedSVD(rank: terms, seed: seed)
        let error = truncationError(frobenius: r, kept: svd.S, all: full?.S)
        // vec(A_i) = √σ_i u_i, vec(B_i) = √σ_i v_i.
        let f = svd.balancedFactors(rank: terms)
        let p = r.shape[0], q = r.shape[1]
        var a: [Tensor] = [], b: [Tensor] = []
        for i in 0..<terms {
            a.append(try Tensor(shape: [s.m1, s.n1], data: (0..<p).map { f.left.data[$0 * terms + i] }))
            b.append(try Tensor(shape: [s.m2, s.n2], data: (0..<q).map { f.right.data[$0 * terms + i] }))
        }
        return Result(a: a, b: b, singularValues: full?.S ?? svd.S, error: error)
    }

    /// Σ A_i ⊗ B_i as a dense `[m1·m2, n1·n2]` matrix (HF layout).
    public static func reconstruct(a: [Tensor], b: [Tensor]) -> Tensor {
        kroneckerSum(a: a.map(\.data), b: b.map(\.data),
                     shape: KroneckerShape(m1: a[0].shape[0], n1: a[0].shape[1], m2: b[0].shape[0], n2: b[0].shape[1]))
    }

    /// Krony-PT-style selection ("pruning") initialization: term by term, the largest remaining
    /// block of W (a row of R(W)) is kept as B_i, and A_i is its least-squares coefficient for
    /// every block, A_i[p, q] = <W_pq, B_i> / ‖B_i‖²; the residual then loses A_i ⊗ B_i. Unlike
    /// Van Loan's SVD, B_i is a piece of the trained weights themselves.
    public static func selectFactorize(_ w: Tensor, shape s: KroneckerShape, terms: Int) throws -> Result {
        var r = try rearrange(w, s)
        let p = r.shape[0], q = r.shape[1]
        guard terms >= 1 && terms <= min(p, q) else {
            throw CompressionError.value("kronecker.terms", "must be between 1 and \(min(p, q)) for factors [\(s.m1), \(s.n1)] ⊗ [\(s.m2), \(s.n2)], got \(terms)")
        }
        var a: [Tensor] = [], b: [Tensor] = []
        for _ in 0..<terms {
            var best = 0, bestNorm = -1.0
            for i in 0..<p {
                var n = 0.0
                for j in 0..<q { let x = Double(r.data[i * q + j]); n += x * x }
                if n > bestNorm { bestNorm = n; best = i }
            }
            let row = Array(r.data[(best * q)..<((best + 1) * q)])
            var coef = [Float](repeating: 0, count: p)
            if bestNorm > 0 {
                for i in 0..<p {
                    var d = 0.0
                    for j in 0..<q { d += Double(r.data[i * q + j]) * Double(row[j]) }
                    coef[i] = Float(d / bestNorm)
                }
            }
            for i in 0..<p { for j in 0..<q { r.data[i * q + j] -= coef[i] * row[j] } }
            a.append(try Tensor(shape: [s.m1, s.n1], data: coef))
            b.append(try Tensor(shape: [s.m2, s.n2], data: row))
        }
        return Result(a: a, b: b, singularValues: [], error: Double(r.frobeniusNorm))
    }

    /// ‖Σ A_i ⊗ B_i‖_F from the factors alone: Σ_ij <A_i, A_j> <B_i, B_j>.
    public static func norm(a: [Tensor], b: [Tensor]) -> Double {
        var s = 0.0
        for i in a.indices { for j in a.indices {
            s += Double(zip(a[i].data, a[j].data).reduce(Float(0)) { $0 + $1.0 * $1.1 }) * Double(zip(b[i].data, b[j].data).reduce(Float(0)) { $0 + $1.0 * $1.1 })
        } }
        return max(s, 0).squareRoot()
    }

    /// `terms: auto`: the shape and term count that fill `budget` parameters with the least error.
    /// For each shape (factors at least 2 x 2: a factor with a side of 1 makes the sum plain low
    /// rank) the most terms that fit are taken, `perTermExtra` parameters per term on top of the
    /// factors (a learnable scale); the errors come from R's singular values. The
    /// `maxCandidates` shapes with the most terms are compared.
    public static func autoShapeAndTerms(_ w: Tensor, budget: Int, perTermExtra: Int = 0, maxCandidates: Int = 12) throws -> (KroneckerShape, Int, Double) {
        let fits = autoCandidates(rows: w.shape[0], cols: w.shape[1], terms: nil, budget: budget, perTermExtra: perTermExtra, maxCandidates: maxCandidates)
        guard !fits.isEmpty else {
            throw CompressionError.value("kronecker.terms", "no factor shape of \(w.shape) with factors of at least 2 x 2 fits \(budget) parameters")
        }
        return try leastError(w, fits)
    }

    /// `factors: auto`: among the divisor pairs whose `terms`-term factorization fits `budget`
    /// parameters, the one with the least error. Errors come from R's singular values (LAPACK
    /// values-only SVD); the `maxCandidates` shapes using the most of the budget are compared.
    public static func autoShape(_ w: Tensor, terms: Int, budget: Int, maxCandidates: Int = 8) throws -> (KroneckerShape, Double) {
        let fits = autoCandidates(rows: w.shape[0], cols: w.shape[1], terms: terms, budget: budget, perTermExtra: 0, maxCandidates: maxCandidates)
        guard !fits.isEmpty else {
            throw CompressionError.value("kronecker.factors", "no factor shape of \(w.shape) fits \(budget) parameters with \(terms) term(s)")
        }
        let best = try leastError(w, fits)
        return (best.0, best.2)
    }

    /// The (shape, terms) candidates `factors: auto` (given `terms`) or `terms: auto` (nil)
    /// compares for a [rows, cols] weight: from the weight's shape and the budget alone, so a
    /// plan can list them before any weight is read.
    public static func autoCandidates(rows: Int, cols: Int, terms: Int?, budget: Int, perTermExtra: Int, maxCandidates: Int) -> [(KroneckerShape, Int)] {
        let all = candidateShapes(rows: rows, cols: cols)
        guard let terms else {
            return Array(all.filter { min($0.m1, $0.n1, $0.m2, $0.n2) >= 2 }
                .map { s -> (KroneckerShape, Int) in (s, min(budget / (parameters(s, terms: 1) + perTermExtra), min(s.m1 * s.n1, s.m2 * s.n2))) }
                .filter { $0.1 >= 1 }
                .sorted { $0.1 > $1.1 || ($0.1 == $1.1 && parameters($0.0, terms: 1) < parameters($1.0, terms: 1)) }
                .prefix(maxCandidates))
        }
        return Array(all.filter { parameters($0, terms: terms) <= budget && terms <= min($0.m1 * $0.n1, $0.m2 * $0.n2) }
            .sorted { parameters($0, terms: terms) > parameters($1, terms: terms) }
            .prefix(maxCandidates).map { ($0, terms) })
    }

    /// The candidate of least error ‖W − Σ_{i≤k} A_i ⊗ B_i‖_F = sqrt(Σ_{i>k} σ_i²), from the
    /// singular values of R(W) for each shape.
    static func leastError(_ w: Tensor, _ candidates: [(KroneckerShape, Int)]) throws -> (KroneckerShape, Int, Double) {
        var best: (KroneckerShape, Int, Double)?
        for (s, k) in candidates {
            let sigma = try rearrange(w, s).singularValuesDouble()
            let err = sigma.dropFirst(k).reduce(0.0) { $0 + $1 * $1 }.squareRoot()
            if best == nil || err < best!.2 { best = (s, k, err) }
        }
        return best!
    }

    /// Divisor pairs: every (m1, n1) with m1 | rows and n1 | cols, excluding the trivial 1x1 and
    /// full-size factors.
    public static func candidateShapes(rows: Int, cols: Int) -> [KroneckerShape] {
        let dr = (1...rows).filter { rows % $0 == 0 }, dc = (1...cols).filter { cols % $0 == 0 }
        var out: [KroneckerShape] = []
        for m1 in dr { for n1 in dc {
            let s = KroneckerShape(m1: m1, n1: n1, m2: rows / m1, n2: cols / n1)
            if (m1 == 1 && n1 == 1) || (s.m2 == 1 && s.n2 == 1) { continue }
            out.append(s)
        } }
        return out
    }

    /// Parameters of `terms` Kronecker terms of this shape.
    public static func parameters(_ s: KroneckerShape, terms: Int) -> Int { terms * (s.m1 * s.n1 + s.m2 * s.n2) }
}
