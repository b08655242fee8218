import Kernels
import Tensor

/// Shape of one Kronecker term `A ⊗ B` with `A [m1, n1]`, `B [m2, n2]`, `in = m1 m2`,
/// `out = n1 n2`; each factor may itself be low rank (`A = A0 A1ᵀ`).
public struct KroneckerShape: Equatable, Sendable, Codable {
    public var m1: Int, n1: Int, m2: Int, n2: Int
    public init(m1: Int, n1: Int, m2: Int, n2: Int) { self.m1 = m1; self.n1 = n1; self.m2 = m2; self.n2 = n2 }
}

/// A sum of Kronecker products `Σ_i s_i A_i ⊗ B_i`, applied without forming `A ⊗ B`:
/// for a row `x` viewed as `X [m1, m2]`, `y = vec(Aᵀ X B)` (row-major HF layout). With `scaled`,
/// each term has a learnable scale `s_i` (parameter `<prefix>.kron.<i>.s`, Krony-PT): it starts at
/// ‖W‖_F / ‖Σ A_i ⊗ B_i‖_F, so the initial weight keeps the norm of the dense one.
public final class KroneckerComponent: WeightComponent {
    public let kind = "kronecker"
    public let shape: KroneckerShape
    public let terms: Int
    /// Rank of each low-rank factor (nil: dense factor).
    public let factorRankA: Int?
    public let factorRankB: Int?
    /// Learnable per-term scales.
    public let scaled: Bool
    public let prefix: String
    /// Saved by forward for backward: Z'' [k·m1, N·n2] (B first) or U [N·n1, k·m2] (A first).
    private var saved: [Float] = []
    /// The factors of the last forward, all terms side by side: s_i A_i and B_i.
    private var aCat: [Float] = [], bCat: [Float] = []

    public init(prefix: String, shape: KroneckerShape, terms: Int, factorRankA: Int? = nil, factorRankB: Int? = nil, scaled: Bool = false) {
        self.prefix = prefix
        self.shape = shape
        self.terms = terms
        self.factorRankA = factorRankA
        self.factorRankB = factorRankB
        self.scaled = scaled
    }

    public var configEntry: [String: JSONValue] {
        var o: [String: JSONValue] = ["kind": .string(kind), "m1": .number(Double(shape.m1)), "n1": .number(Double(shape.n1)),
                                      "m2": .number(Double(shape.m2)), "n2": .number(Double(shape.n2)), "terms": .number(Double(terms))]
        if let r = factorRankA { o["factor_rank_a"] = .number(Double(r)) }
        if let r = factorRankB { o["factor_rank_b"] = .number(Double(r)) }
        if scaled { o["scaled"] = .bool(true) }
        return o
    }

    /// `{"kind": "kronecker", "m1", "n1", "m2", "n2", "terms", "factor_rank_a"?, "factor_rank_b"?, "scaled"?}`.
    public static func decode(_ c: [String: JSONValue], layer: String, inFeatures i: Int, outFeatures o: Int, at: String) throws -> KroneckerComponent {
        guard let m1 = c["m1"]?.intValue, let n1 = c["n1"]?.intValue, let m2 = c["m2"]?.intValue, let n2 = c["n2"]?.intValue,
              // Divisibility rather than m1 * m2 == i: the product of two file values can overflow.
              m1 > 0, n1 > 0, m2 > 0, n2 > 0, i % m1 == 0, i / m1 == m2, o % n1 == 0, o / n1 == n2 else {
            throw ModelError.input("\(at): kronecker needs positive m1*m2 = \(i) and n1*n2 = \(o)")
        }
        // At most rank(R(W)) = min(m1 n1, m2 n2) terms, and factor ranks within their factors.
        let terms = c["terms"]?.intValue ?? 1
        guard terms >= 1, terms <= min(m1 * n1, m2 * n2) else {
            throw ModelError.input("\(at): kronecker terms must be in 1...\(min(m1 * n1, m2 * n2)), got \(c["terms"]!)")
        }
        for (key, limit) in [("factor_rank_a", min(m1, n1)), ("factor_rank_b", min(m2, n2))] {
            guard let v = c[key], v != .null else { continue }
            guard let r = v.intValue, r >= 1, r <= limit else { throw ModelError.input("\(at): \(key) must be in 1...\(limit), got \(v)") }
        }
        return KroneckerComponent(prefix: layer, shape: KroneckerShape(m1: m1, n1: n1, m2: m2, n2: n2), terms: terms,
                                  factorRankA: c["factor_rank_a"]?.intValue, factorRankB: c["factor_rank_b"]?.intValue,
                                  scaled: c["scaled"]?.boolValue ?? false)
    }

    /// Term i's scale (1 without `scaled`).
    public func scale(_ i: Int, params: ParameterSet) -> Float { scaled ? params.value(name(i, "s"))[0] : 1 }

    public var inFeatures: Int { shape.m1 * shape.m2 }
    public var outFeatures: Int { shape.n1 * shape.n2 }

    public func name(_ term: Int, _ part: String) -> String { "\(prefix).kron.\(term).\(part)" }

    public var parameters: [(name: String, shape: [Int])] {
        let s = shape
        return (0..<terms).flatMap { i -> [(name: String, shape: [Int])] in
            (factorRankA.map { r in [(name(i, "a0"), [s.m1, r]), (name(i, "a1"), [s.n1, r])] } ?? [(name(i, "a"), [s.m1, s.n1])]) +
            (factorRankB.map { r in [(name(i, "b0"), [s.m2, r]), (name(i, "b1"), [s.n2, r])] } ?? [(name(i, "b"), [s.m2, s.n2])]) +
            (scaled ? [(name(i, "s"), [1])] : [])
        }
    }

    /// Factor `A_i [m1, n1]` (materialised from `A0 A1ᵀ` when low rank).
    public func factorA(_ i: Int, params: ParameterSet) -> [Float] {
        factor(i, "a", rows: shape.m1, cols: shape.n1, rank: factorRankA, params: params)
    }
    /// Factor `B_i [m2, n2]`.
    public func factorB(_ i: Int, params: ParameterSet) -> [Float] {
        factor(i, "b", rows: shape.m2, cols: shape.n2, rank: factorRankB, params: params)
    }

    private func factor(_ i: Int, _ p: String, rows: Int, cols: Int, rank: Int?, params: ParameterSet) -> [Float] {
        guard let r = rank else { return Array(UnsafeBufferPointer(start: params.value(name(i, p)), count: rows * cols)) }
        var out = [Float](repeating: 0, count: rows * cols)
        out.withUnsafeMutableBufferPointer { o in
            sgemm(transB: true, m: rows, n: cols, k: r, a: params.value(name(i, p + "0")), b: params.value(name(i, p + "1")), c: o.baseAddress!)
        }
        return out
    }

    /// Adds a factor gradient `dF [rows, cols]` to the parameters it came from.
    private func addFactorGrad(_ i: Int, _ p: String, _ dF: UnsafePointer<Float>, rows: Int, cols: Int, rank: Int?, params: ParameterSet) {
        guard let r = rank else {
            let g = params.grad(name(i, p))
            for j in 0..<(rows * cols) { g[j] += dF[j] }
            return
        }
        // F = F0 F1ᵀ: dF0 [rows, r] += dF · F1; dF1 [cols, r] += dFᵀ · F0
        sgemm(m: rows, n: r, k: cols, a: dF, b: params.value(name(i, p + "1")), beta: 1, c: params.grad(name(i, p + "0")))
        sgemm(transA: true, m: cols, n: r, k: rows, a: dF, b: params.value(name(i, p + "0")), beta: 1, c: params.grad(name(i, p + "1")))
    }

    /// Which product runs first for a row X [m1, m2]: `X B` (intermediate [m1, n2] per row and
    /// term) or `Aᵀ X` (intermediate [n1, m2]); the smaller intermediate wins, so shapes such as
    /// [128, 3] ⊗ [2, 256] never make an N x 128 x 256 buffer per term.
    public var bFirst: Bool { shape.m1 * shape.n2 <= shape.n1 * shape.m2 }

    /// The factors of every term side by side, so each product is one GEMM over all terms:
    /// B first: aCat [k·m1, n1] (rows (i, a) = s_i A_i[a, :]), bCat [m2, k·n2] (columns (i, d));
    /// A first: aCat [m1, k·n1] (columns (i, c)), bCat [k·m2, n2] (rows (i, b)). `transposed`
    /// lays out the factors of Wᵀ = Σ s_i A_iᵀ ⊗ B_iᵀ instead (shape [n1·n2, m1·m2]).
    static func concatenate(a: [[Float]], b: [[Float]], shape s: KroneckerShape, transposed: Bool)
        -> (shape: KroneckerShape, bFirst: Bool, aCat: [Float], bCat: [Float]) {
        let t = transposed ? KroneckerShape(m1: s.n1, n1: s.m1, m2: s.n2, n2: s.m2) : s
        let (m1, n1, m2, n2, k) = (t.m1, t.n1, t.m2, t.n2, a.count)
        let bFirst = m1 * n2 <= n1 * m2
        var aCat = [Float](repeating: 0, count: k * m1 * n1), bCat = [Float](repeating: 0, count: k * m2 * n2)
        for i in 0..<k {
            // Element (r, c) of the (possibly transposed) factor.
            func A(_ r: Int, _ c: Int) -> Float { transposed ? a[i][c * s.n1 + r] : a[i][r * n1 + c] }
            func B(_ r: Int, _ c: Int) -> Float { transposed ? b[i][c * s.n2 + r] : b[i][r * n2 + c] }
            for r in 0..<m1 { for c in 0..<n1 { aCat[bFirst ? (i * m1 + r) * n1 + c : r * k * n1 + i * n1 + c] = A(r, c) } }
            for r in 0..<m2 { for c in 0..<n2 { bCat[bFirst ? r * k * n2 + i * n2 + c : (i * m2 + r) * n2 + c] = B(r, c) } }
        }
        return (t, bFirst, aCat, bCat)
    }

    /// out [N, n1·n2] += x [N, m1·m2] · Σ A_i ⊗ B_i with the factors concatenated as `concatenate`
    /// lays them out (two GEMMs and a permutation); returns what backward needs.
    static func apply(_ x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, shape s: KroneckerShape, terms k: Int,
                      bFirst: Bool, aCat: [Float], bCat: [Float]) -> [Float] {
        let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
        if bFirst {
            // Z [N·m1, k·n2] = X [N·m1, m2] · bCat;  Z'' [k·m1, N·n2] = Z with the N and k axes swapped;
            // Y' [n1, N·n2] = aCatᵀ · Z'';  out[n, c, d] += Y'[c, n·n2 + d].
            var z = [Float](repeating: 0, count: N * m1 * k * n2), y = [Float](repeating: 0, count: n1 * N * n2)
            var saved = [Float](repeating: 0, count: k * m1 * N * n2)
            sgemm(m: N * m1, n: k * n2, k: m2, a: x, b: bCat, c: &z)
            swapAxes02(z, N, m1, k, n2, into: &saved)
            sgemm(transA: true, m: n1, n: N * n2, k: k * m1, a: aCat, b: saved, c: &y)
            y.withUnsafeBufferPointer { yp in
                parallelFor(N, minChunk: 16) { rows in
                    for n in rows {
                        for c in 0..<n1 {
                            let src = yp.baseAddress! + c * N * n2 + n * n2, dst = out + n * n1 * n2 + c * n2
                            for d in 0..<n2 { dst[d] += src[d] }
                        }
                    }
                }
            }
            return saved
        }
        // X' [m1, N·m2];  U' [k·n1, N·m2] = aCatᵀ · X';  U [N·n1, k·m2] = U' with the axes swapped;
        // out [N·n1, n2] += U · bCat.
        var xp = [Float](repeating: 0, count: m1 * N * m2), up = [Float](repeating: 0, count: k * n1 * N * m2)
        var saved = [Float](repeating: 0, count: N * n1 * k * m2)
        xp.withUnsafeMutableBufferPointer { permuteOuter(x, N, m1, m2, into: $0.baseAddress!) }
        sgemm(transA: true, m: k * n1, n: N * m2, k: m1, a: aCat, b: xp, c: &up)
        swapAxes02(up, k, n1, N, m2, into: &saved)
        sgemm(m: N * n1, n: n2, k: k * m2, a: saved, b: bCat, beta: 1, c: out)
        return saved
    }

    /// The factors of the current parameters (A scaled by s_i).
    private func factors(params: ParameterSet) -> (a: [[Float]], b: [[Float]]) {
        ((0..<terms).map { i in let s = scale(i, params: params); return factorA(i, params: params).map { $0 * s } },
         (0..<terms).map { factorB($0, params: params) })
    }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet) {
        let f = factors(params: params)
        let c = Self.concatenate(a: f.a, b: f.b, shape: shape, transposed: false)
        aCat = c.aCat
        bCat = c.bCat
        saved = Self.apply(x, N: N, out: out, shape: shape, terms: terms, bFirst: bFirst, aCat: aCat, bCat: bCat)
    }

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, params: ParameterSet) {
        if !accumulate { y.update(repeating: 0, count: N * inFeatures) }
        let f = factors(params: params)
        let c = Self.concatenate(a: f.a, b: f.b, shape: shape, transposed: true)
        _ = Self.apply(x, N: N, out: y, shape: c.shape, terms: terms, bFirst: c.bFirst, aCat: c.aCat, bCat: c.bCat)
    }

    public func addRow(_ i: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet) {
        // Row i = (p, r) with i = p·m2 + r: W[(p, r), (q, t)] = Σ s A[p, q] B[r, t].
        let (n1, m2, n2) = (shape.n1, shape.m2, shape.n2), p = i / m2, r = i % m2
        for term in 0..<terms {
            let a = factorA(term, params: params), b = factorB(term, params: params), s = scale(term, params: params)
            for q in 0..<n1 {
                let apq = s * a[p * n1 + q]
                for t in 0..<n2 { dst[q * n2 + t] += apq * b[r * n2 + t] }
            }
        }
    }

    public func rowGradient(_ i: Int, _ d: UnsafePointer<Float>, params: ParameterSet) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2), p = i / m2, r = i % m2
        for term in 0..<terms {
            let a = factorA(term, params: params), b = factorB(term, params: params), s = scale(term, params: params)
            var gA = [Float](repeating: 0, count: m1 * n1), gB = [Float](repeating: 0, count: m2 * n2)
            for q in 0..<n1 {
                for t in 0..<n2 {
                    let g = d[q * n2 + t]
                    gA[p * n1 + q] += g * b[r * n2 + t]          // with the scale at 1
                    gB[r * n2 + t] += s * g * a[p * n1 + q]
                }
            }
            addTermGradients(term, gA: &gA, dB: gB, params: params)
        }
    }

    /// Factor gradients of term i from the batched G_A (with the scale at 1) and dB: the scale's
    /// gradient is <G_A, A> (the term is linear in A), A's own is s·G_A.
    private func addTermGradients(_ i: Int, gA: UnsafeMutablePointer<Float>, dB: UnsafePointer<Float>, params: ParameterSet) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        if scaled {
            let a = factorA(i, params: params), s = scale(i, params: params)
            params.grad(name(i, "s"))[0] += Float(dot8(gA, a, count: m1 * n1))
            Kernels.scale(gA, count: m1 * n1, by: s)
        }
        addFactorGrad(i, "a", gA, rows: m1, cols: n1, rank: factorRankA, params: params)
        addFactorGrad(i, "b", dB, rows: m2, cols: n2, rank: factorRankB, params: params)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet) {
        let (m1, n1, m2, n2, k) = (shape.m1, shape.n1, shape.m2, shape.n2, terms)
        var gA = [Float](repeating: 0, count: m1 * n1), dB = [Float](repeating: 0, count: m2 * n2)
        if bFirst {
            var dyp = [Float](repeating: 0, count: n1 * N * n2)
            dyp.withUnsafeMutableBufferPointer { permuteOuter(dout, N, n1, n2, into: $0.baseAddress!) }
            // G_A for all terms [k·m1, n1] = Z'' · dY'ᵀ;  dZ'' [k·m1, N·n2] = aCat · dY'
            var gAll = [Float](repeating: 0, count: k * m1 * n1), dzpp = [Float](repeating: 0, count: k * m1 * N * n2)
            sgemm(transB: true, m: k * m1, n: n1, k: N * n2, a: saved, b: dyp, c: &gAll)
            sgemm(m: k * m1, n: N * n2, k: n1, a: aCat, b: dyp, c: &dzpp)
            // dZ [N·m1, k·n2];  dB for all terms [m2, k·n2] = Xᵀ · dZ;  dX (+)= dZ · bCatᵀ
            var dz = [Float](repeating: 0, count: N * m1 * k * n2), dBAll = [Float](repeating: 0, count: m2 * k * n2)
            swapAxes02(dzpp, k, m1, N, n2, into: &dz)
            sgemm(transA: true, m: m2, n: k * n2, k: N * m1, a: x, b: dz, c: &dBAll)
            if let dx { sgemm(transB: true, m: N * m1, n: m2, k: k * n2, a: dz, b: bCat, beta: accumulate ? 1 : 0, c: dx) }
            for i in 0..<k {
                for t in 0..<(m1 * n1) { gA[t] = gAll[i * m1 * n1 + t] }
                for r in 0..<m2 { for d in 0..<n2 { dB[r * n2 + d] = dBAll[r * k * n2 + i * n2 + d] } }
                addTermGradients(i, gA: &gA, dB: dB, params: params)
            }
        } else {
            // dB for all terms [k·m2, n2] = Uᵀ · dY;  dU [N·n1, k·m2] = dY · bCatᵀ;  dU' [k·n1, N·m2]
            var dBAll = [Float](repeating: 0, count: k * m2 * n2), du = [Float](repeating: 0, count: N * n1 * k * m2)
            var dup = [Float](repeating: 0, count: k * n1 * N * m2), xp = [Float](repeating: 0, count: m1 * N * m2)
            sgemm(transA: true, m: k * m2, n: n2, k: N * n1, a: saved, b: dout, c: &dBAll)
            sgemm(transB: true, m: N * n1, n: k * m2, k: n2, a: dout, b: bCat, c: &du)
            swapAxes02(du, N, n1, k, m2, into: &dup)
            // G_A for all terms [m1, k·n1] = X' · dU'ᵀ;  dX' [m1, N·m2] = aCat · dU'
            var gAll = [Float](repeating: 0, count: m1 * k * n1)
            xp.withUnsafeMutableBufferPointer { permuteOuter(x, N, m1, m2, into: $0.baseAddress!) }
            sgemm(transB: true, m: m1, n: k * n1, k: N * m2, a: xp, b: dup, c: &gAll)
            if let dx {
                var dxp = [Float](repeating: 0, count: m1 * N * m2)
                sgemm(m: m1, n: N * m2, k: k * n1, a: aCat, b: dup, c: &dxp)
                if accumulate {
                    var t = [Float](repeating: 0, count: N * m1 * m2)
                    t.withUnsafeMutableBufferPointer { tb in
                        permuteInner(dxp, m1, N, m2, into: tb.baseAddress!)
                        parallelFor(N * m1 * m2, minChunk: 8192) { r in for j in r { dx[j] += tb[j] } }
                    }
                } else {
                    permuteInner(dxp, m1, N, m2, into: dx)
                }
            }
            for i in 0..<k {
                for r in 0..<m1 { for c in 0..<n1 { gA[r * n1 + c] = gAll[r * k * n1 + i * n1 + c] } }
                for t in 0..<(m2 * n2) { dB[t] = dBAll[i * m2 * n2 + t] }
                addTermGradients(i, gA: &gA, dB: dB, params: params)
            }
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor {
        let a = (0..<terms).map { i in let s = scale(i, params: params); return factorA(i, params: params).map { $0 * s } }
        return kroneckerSum(a: a, b: (0..<terms).map { factorB($0, params: params) }, shape: shape)
    }

    public var counts: (stored: Int, nonZero: Int) {
        let a = factorRankA.map { ($0) * (shape.m1 + shape.n1) } ?? shape.m1 * shape.n1
        let b = factorRankB.map { ($0) * (shape.m2 + shape.n2) } ?? shape.m2 * shape.n2
        let n = terms * (a + b + (scaled ? 1 : 0))
        return (n, n)
    }
}

/// Σ_i A_i ⊗ B_i as a dense `[m1·m2, n1·n2]` matrix (HF layout), A_i [m1, n1], B_i [m2, n2].
public func kroneckerSum(a: [[Float]], b: [[Float]], shape s: KroneckerShape) -> Tensor {
    let (m1, n1, m2, n2) = (s.m1, s.n1, s.m2, s.n2)
    var w = Tensor(shape: [m1 * m2, n1 * n2])
    w.data.withUnsafeMutableBufferPointer { out in
        for (A, B) in zip(a, b) {
            for p in 0..<m1 { for q in 0..<n1 {
                let apq = A[p * n1 + q]
                for r in 0..<m2 {
                    let row = out.baseAddress! + (p * m2 + r) * (n1 * n2) + q * n2
                    for t in 0..<n2 { row[t] += apq * B[r * n2 + t] }
                }
            } }
        }
    }
    return w
}

/// src [P, Q, R] -> dst [Q, P, R] (swap the two outer axes).
@inline(__always)
func permuteOuter(_ src: UnsafePointer<Float>, _ P: Int, _ Q: Int, _ R: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelFor(P, minChunk: 16) { ps in
        for p in ps {
            for q in 0..<Q { (dst + (q * P + p) * R).update(from: src + (p * Q + q) * R, count: R) }
        }
    }
}

/// src [P, Q, R, S] -> dst [R, Q, P, S] (swap the first and third axes; its own inverse with P
/// and R exchanged).
func swapAxes02(_ src: UnsafePointer<Float>, _ P: Int, _ Q: Int, _ R: Int, _ S: Int, into dst: UnsafeMutablePointer<Float>) {
    parallelFor(P, minChunk: 4) { ps in
        for p in ps {
            for q in 0..<Q {
                for r in 0..<R { (dst + ((r * Q + q) * P + p) * S).update(from: src + ((p * Q + q) * R + r) * S, count: S) }
            }
        }
    }
}

/// src [Q, P, R] -> dst [P, Q, R] (inverse of `permuteOuter(_, P, Q, R)`).
@inline(__always)
func permuteInner(_ src: UnsafePointer<Float>, _ Q: Int, _ P: Int, _ R: Int, into dst: UnsafeMutablePointer<Float>) {
    permuteOuter(src, Q, P, R, into: dst)
}
