import Foundation
import Model
import Tensor

/// Whitened (data-aware) sums of Kronecker products: the `Σ_{i≤k} A_i ⊗ B_i` of small output
/// error ‖X(W − Σ A_i ⊗ B_i)‖_F on the calibration inputs X, for W [m1·m2, n1·n2].
///
/// 1. XᵀX + λI ≈ C1 ⊗ C2 (C1 [m1, m1], C2 [m2, m2]): Van Loan's nearest Kronecker product of the
///    Gram matrix (`NearestKronecker` on the shape (m1, m1) ⊗ (m2, m2)), signs fixed so that
///    tr C1 > 0, symmetrized and damped (`percdamp` · mean diagonal) until both are positive
///    definite; C1 = L1 L1ᵀ, C2 = L2 L2ᵀ, K = L1 ⊗ L2.
/// 2. Under C1 ⊗ C2 the error is ‖Kᵀ(W − Σ A ⊗ B)‖_F = ‖W̃ − Σ (L1ᵀA) ⊗ (L2ᵀB)‖_F with W̃ = KᵀW,
///    so Van Loan's SVD of R(W̃) gives the whitened factors Ã, B̃ exactly; A = L1⁻ᵀÃ, B = L2⁻ᵀB̃.
/// 3. Alternating least squares on the true error tr(Dᵀ H D), H = XᵀX + λI: each sweep minimizes
///    over all A_i with the B_i fixed, then over the B_i. In the whitened coordinates the error is
///    tr(D̃ᵀ H̃ D̃) with H̃ = K⁻¹ H K⁻ᵀ ≈ I, and each half-step is a linear least-squares problem solved
///    by conjugate gradients from the current factors, preconditioned by its H̃ = I form ((FᵀF)⁻¹
///    on the fixed factors F): warm-started CG never increases the error, so no sweep does.
public enum WhitenedKronecker {
    /// Conjugate-gradient iterations per ALS half-step, and the relative residual that stops them.
    public static let cgIterations = 25
    public static let cgTolerance = 1e-6

    /// K = L1 ⊗ L2 for one row split m1·m2: lower Cholesky factors of C1 ⊗ C2 ≈ XᵀX + λI.
    public struct Whitener {
        public let m1: Int, m2: Int
        /// Lower triangular, row-major [m1, m1] and [m2, m2].
        public let l1: [Double], l2: [Double]

        /// M [m1·m2, cols] ← op(K) M, or op(K)⁻¹ M with `inverse` (op transposes when `transposed`):
        /// (P1 ⊗ P2) M applies P2 to each of the m1 row blocks [m2, cols], then P1 to M as [m1, m2·cols].
        func apply(_ m: inout [Double], cols: Int, transposed: Bool, inverse: Bool) {
            let (m1, m2) = (self.m1, self.m2)
            m.withUnsafeMutableBufferPointer { x in
                l2.withUnsafeBufferPointer { l in
                    for a in 0..<m1 {
                        lowerTriangular(l.baseAddress!, n: m2, transposed: transposed, inverse: inverse, x.baseAddress! + a * m2 * cols, cols: cols)
                    }
                }
                l1.withUnsafeBufferPointer { lowerTriangular($0.baseAddress!, n: m1, transposed: transposed, inverse: inverse, x.baseAddress!, cols: m2 * cols) }
            }
        }
    }

    /// The Kronecker whitener of `gram` (XᵀX + λI, [m1·m2, m1·m2]) for the row split m1·m2: the
    /// nearest C1 ⊗ C2, made symmetric positive definite (sign, symmetry, dampening by `percdamp` ·
    /// mean diagonal, ten times more at each failed Cholesky; the identity after four).
    public static func whitener(gram h: [Double], m1: Int, m2: Int, percdamp: Double, seed: UInt64) throws -> Whitener {
        let n = m1 * m2
        let nkp = try NearestKronecker.factorize(try Tensor(shape: [n, n], data: h.map(Float.init)),
                                                 shape: KroneckerShape(m1: m1, n1: m1, m2: m2, n2: m2), terms: 1, seed: seed)
        let sign: Double = (0..<m1).reduce(0.0) { $0 + Double(nkp.a[0][$1, $1]) } < 0 ? -1 : 1
        func factor(_ t: Tensor, _ k: Int) -> [Double] {
            var c = [Double](repeating: 0, count: k * k)
            for i in 0..<k { for j in 0..<k { c[i * k + j] = sign * 0.5 * (Double(t[i, j]) + Double(t[j, i])) } }
            var damp = percdamp
            for _ in 0..<4 {
                var d = Whitening.damped(c, n: k, percdamp: damp)
                if (try? lowerCholesky(&d, n: k)) != nil { return d }
                damp *= 10
            }
            return (0..<(k * k)).map { $0 / k == $0 % k ? 1 : 0 }
        }
        return Whitener(m1: m1, m2: m2, l1: factor(nkp.a[0], m1), l2: factor(nkp.b[0], m2))
    }

    /// One weight's problem in the whitened coordinates of a factor shape.
    public struct Problem {
        public let shape: KroneckerShape
        public let whitener: Whitener
        /// R(W̃) [m1·n1, m2·n2] for W̃ = KᵀW.
        let rw: [Double]
        /// H̃ = K⁻¹ H K⁻ᵀ [in, in].
        let ht: [Double]

        /// Sets up W̃ and H̃ for `w` [in, out] and the damped Gram `h` [in, in].
        public init(_ w: Tensor, gram h: [Double], shape s: KroneckerShape, percdamp: Double, seed: UInt64) throws {
            let n = w.shape[0], out = w.shape[1]
            shape = s
            whitener = try WhitenedKronecker.whitener(gram: h, m1: s.m1, m2: s.m2, percdamp: percdamp, seed: seed)
            var wt = w.data.map(Double.init)
            whitener.apply(&wt, cols: out, transposed: true, inverse: false)
            rw = rearrange(wt, s, inverse: false)
            // H̃ = K⁻¹ (K⁻¹ H)ᵀ, H being symmetric; symmetrized against rounding.
            var t = h
            whitener.apply(&t, cols: n, transposed: false, inverse: true)
            var tt = [Double](repeating: 0, count: n * n)
            for i in 0..<n { for j in 0..<n { tt[j * n + i] = t[i * n + j] } }
            whitener.apply(&tt, cols: n, transposed: false, inverse: true)
            for i in 0..<n { for j in 0..<i { let v = 0.5 * (tt[i * n + j] + tt[j * n + i]); tt[i * n + j] = v; tt[j * n + i] = v } }
            ht = tt
        }

        var p: Int { shape.m1 * shape.n1 }
        var q: Int { shape.m2 * shape.n2 }

        /// R(H̃ · R⁻¹(r)) for r [p, q]: the whitened Gram acting on a rearranged weight.
        func op(_ r: [Double]) -> [Double] {
            let n = shape.m1 * shape.m2, out = shape.n1 * shape.n2
            let d = rearrange(r, shape, inverse: true)
            var hd = [Double](repeating: 0, count: n * out)
            dgemm(m: n, n: out, k: n, a: ht, b: d, c: &hd)
            return rearrange(hd, shape, inverse: false)
        }

        /// R(W̃) − Ã B̃ᵀ for Ã [p, k], B̃ [q, k].
        func residual(_ a: [Double], _ b: [Double], terms k: Int) -> [Double] {
            var e = rw
            dgemm(transB: true, m: p, n: q, k: k, alpha: -1, a: a, b: b, beta: 1, c: &e)
            return e
        }

        /// The true error tr(Dᵀ H D) of the whitened factors Ã, B̃.
        public func error(_ a: [Double], _ b: [Double], terms k: Int) -> Double {
            let e = residual(a, b, terms: k)
            return zip(e, op(e)).reduce(0.0) { $0 + $1.0 * $1.1 }
        }

        /// Van Loan's k-term factors of R(W̃): Ã = U_k Σ_k^{1/2} [p, k], B̃ = V_k Σ_k^{1/2} [q, k],
        /// and every singular value (what each term removes from the whitened error, σ_i²).
        public func nearest(terms k: Int) throws -> (a: [Double], b: [Double], singularValues: [Double]) {
            let (p, q) = (self.p, self.q), full = min(p, q)
            guard k >= 1 && k <= full else { throw CompressionError.value("kronecker.terms", "must be between 1 and \(full) for this factor shape, got \(k)") }
            let svd = try svdDouble(rw, rows: p, cols: q)
            var a = [Double](repeating: 0, count: p * k), b = [Double](repeating: 0, count: q * k)
            for j in 0..<k {
                let root = svd.S[j].squareRoot()
                for i in 0..<p { a[i * k + j] = svd.U[i * full + j] * root }
                for i in 0..<q { b[i * k + j] = svd.Vt[j * q + i] * root }
            }
            return (a, b, svd.S)
        }

        /// The singular values of R(W̃) alone.
        public func spectrum() throws -> [Double] { try svdDouble(rw, rows: p, cols: q, valuesOnly: true).S }

        /// The factors A_i = c_i L1⁻ᵀ Ã_i [m1, n1] and B_i = L2⁻ᵀ B̃_i / c_i [m2, n2], c_i making
        /// ‖A_i‖_F = ‖B_i‖_F as Van Loan's plain factors are (the same terms A_i ⊗ B_i; unbalanced
        /// factors are hard for AdamW to distil from).
        public func unwhitened(_ a: [Double], _ b: [Double], terms k: Int) throws -> (a: [Tensor], b: [Tensor]) {
            let s = shape
            func back(_ x: [Double], _ i: Int, rows: Int, cols: Int, _ l: [Double]) -> [Double] {
                var f = (0..<(rows * cols)).map { x[$0 * k + i] }
                l.withUnsafeBufferPointer { lp in f.withUnsafeMutableBufferPointer { lowerTriangular(lp.baseAddress!, n: rows, transposed: true, inverse: true, $0.baseAddress!, cols: cols) } }
                return f
            }
            var fa: [Tensor] = [], fb: [Tensor] = []
            for i in 0..<k {
                let x = back(a, i, rows: s.m1, cols: s.n1, whitener.l1), y = back(b, i, rows: s.m2, cols: s.n2, whitener.l2)
                let (na, nb) = (x.reduce(0.0) { $0 + $1 * $1 }.squareRoot(), y.reduce(0.0) { $0 + $1 * $1 }.squareRoot())
                let c = na > 0 && nb > 0 ? (nb / na).squareRoot() : 1
                fa.append(try Tensor(shape: [s.m1, s.n1], data: x.map { Float($0 * c) }))
                fb.append(try Tensor(shape: [s.m2, s.n2], data: y.map { Float($0 / c) }))
            }
            return (fa, fb)
        }
    }

    /// A whitened factorization: the factors and the true error tr(Dᵀ H D) after the whitened
    /// nearest Kronecker sum (`errors[0]`) and after each ALS sweep.
    public struct Result {
        public var a: [Tensor], b: [Tensor]
        public var errors: [Double]
        /// The singular values of R(W̃).
        public var singularValues: [Double]
    }

    /// The whitened k-term factorization of `w` in `shape`, refined by `sweeps` ALS sweeps on the
    /// damped Gram `h` (XᵀX + λI).
    public static func factorize(_ w: Tensor, gram h: [Double], shape: KroneckerShape, terms k: Int, sweeps: Int, percdamp: Double,
                                 seed: UInt64 = 0) throws -> Result {
        try factorize(try Problem(w, gram: h, shape: shape, percdamp: percdamp, seed: seed), terms: k, sweeps: sweeps)
    }

    /// As above, on a prepared problem.
    public static func factorize(_ problem: Problem, terms k: Int, sweeps: Int) throws -> Result {
        var (a, b, sigma) = try problem.nearest(terms: k)
        var errors = [problem.error(a, b, terms: k)]
        for _ in 0..<sweeps {
            let (a0, b0) = (a, b)
            try halfStep(&a, fixed: b, left: true, terms: k, problem)
            try halfStep(&b, fixed: a, left: false, terms: k, problem)
            let e = problem.error(a, b, terms: k)
            if e > errors.last! { (a, b) = (a0, b0); errors.append(errors.last!); break }   // rounding only: keep the better factors
            errors.append(e)
        }
        let f = try problem.unwhitened(a, b, terms: k)
        return Result(a: f.a, b: f.b, errors: errors, singularValues: sigma)
    }

    /// One ALS half-step: the least-squares X (Ã [p, k] when `left`, else B̃ [q, k]) with the
    /// other factor F fixed, by preconditioned conjugate gradients from the current X on the
    /// normal equations G X = rhs, G X = P(op(M(X))) with M(X) = X Fᵀ (left) or F Xᵀ and P(E) = E F
    /// (left) or Eᵀ F; the preconditioner is G for H̃ = I, X ↦ X (FᵀF)⁻¹.
    static func halfStep(_ x: inout [Double], fixed f: [Double], left: Bool, terms k: Int, _ pr: Problem) throws {
        let (p, q) = (pr.p, pr.q), rows = left ? p : q, frows = left ? q : p
        func product(_ y: [Double]) -> [Double] {   // [p, q]
            var out = [Double](repeating: 0, count: p * q)
            if left { dgemm(transB: true, m: p, n: q, k: k, a: y, b: f, c: &out) } else { dgemm(transB: true, m: p, n: q, k: k, a: f, b: y, c: &out) }
            return out
        }
        func project(_ e: [Double]) -> [Double] {   // [rows, k]
            var out = [Double](repeating: 0, count: rows * k)
            if left { dgemm(m: p, n: k, k: q, a: e, b: f, c: &out) } else { dgemm(transA: true, m: q, n: k, k: p, a: e, b: f, c: &out) }
            return out
        }
        var s = [Double](repeating: 0, count: k * k)
        dgemm(transA: true, m: k, n: k, k: frows, a: f, b: f, c: &s)
        let ridge = 1e-12 * max((0..<k).reduce(0.0) { $0 + s[$1 * k + $1] } / Double(k), Double.leastNormalMagnitude)
        for i in 0..<k { s[i * k + i] += ridge }
        try symmetricInverse(&s, n: k)
        func precondition(_ r: [Double]) -> [Double] {
            var z = [Double](repeating: 0, count: rows * k)
            dgemm(m: rows, n: k, k: k, a: r, b: s, c: &z)
            return z
        }
        func dot(_ u: [Double], _ v: [Double]) -> Double { zip(u, v).reduce(0.0) { $0 + $1.0 * $1.1 } }
        let current = left ? pr.residual(x, f, terms: k) : pr.residual(f, x, terms: k)
        var r = project(pr.op(current))
        var z = precondition(r), d = z
        var rz = dot(r, z)
        let r0 = dot(r, r).squareRoot()
        for _ in 0..<cgIterations {
            guard rz > 0, dot(r, r).squareRoot() > cgTolerance * r0 else { break }
            let gd = project(pr.op(product(d)))
            let dgd = dot(d, gd)
            guard dgd > 0 else { break }
            let alpha = rz / dgd
            for i in x.indices { x[i] += alpha * d[i]; r[i] -= alpha * gd[i] }
            z = precondition(r)
            let next = dot(r, z)
            for i in d.indices { d[i] = z[i] + next / rz * d[i] }
            rz = next
        }
    }

    /// The candidate (shape, terms) whose whitened nearest Kronecker sum has the least true error
    /// tr(Dᵀ H D), with its prepared problem.
    public static func leastError(_ w: Tensor, gram h: [Double], _ candidates: [(KroneckerShape, Int)], percdamp: Double,
                                  seed: UInt64) throws -> (problem: Problem, terms: Int) {
        var best: (Problem, Int, Double)?
        for (s, k) in candidates {
            let pr = try Problem(w, gram: h, shape: s, percdamp: percdamp, seed: seed)
            let init0 = try pr.nearest(terms: k)
            let e = pr.error(init0.a, init0.b, terms: k)
            if best == nil || e < best!.2 { best = (pr, k, e) }
        }
        guard let best else { throw CompressionError.value("kronecker", "no factor shape to choose from") }
        return (best.0, best.1)
    }
}

/// R(W) of a Double `W [m1·m2, n1·n2]`, R[a·n1 + c, b·n2 + d] = W[a·m2 + b, c·n2 + d]
/// (`NearestKronecker.rearrange`), or W back from R with `inverse`.
func rearrange(_ x: [Double], _ s: KroneckerShape, inverse: Bool) -> [Double] {
    let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
    var out = [Double](repeating: 0, count: x.count)
    let outCols = n1 * n2
    for a in 0..<m1 { for b in 0..<m2 {
        let row = (a * m2 + b) * outCols
        for c in 0..<n1 {
            let rrow = (a * n1 + c) * (m2 * n2) + b * n2
            for d in 0..<n2 {
                if inverse { out[row + c * n2 + d] = x[rrow + d] } else { out[rrow + d] = x[row + c * n2 + d] }
            }
        }
    } }
    return out
}
