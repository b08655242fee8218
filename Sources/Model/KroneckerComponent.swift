import Kernels
import Tensor

/// Shape of one Kronecker term `A ⊗ B` with `A [m1, n1]`, `B [m2, n2]`, `in = m1 m2`,
/// `out = n1 n2`; each factor may itself be low rank (`A = A0 A1ᵀ`).
public struct KroneckerShape: Equatable, Sendable, Codable {
    public var m1: Int, n1: Int, m2: Int, n2: Int
    public init(m1: Int, n1: Int, m2: Int, n2: Int) { self.m1 = m1; self.n1 = n1; self.m2 = m2; self.n2 = n2 }
    /// The shape of the transposed sum Σ Aᵀ ⊗ Bᵀ.
    public var transposed: KroneckerShape { KroneckerShape(m1: n1, n1: m1, m2: n2, n2: m2) }
    /// Which product runs first for a row X [m1, m2]: `X B` (intermediate [m1, n2] per row and
    /// term) or `Aᵀ X` (intermediate [n1, m2]); the smaller intermediate wins, so shapes such as
    /// [128, 3] ⊗ [2, 256] never make an N x 128 x 256 buffer per term.
    public var bFirst: Bool { m1 * n2 <= n1 * m2 }
}

/// A sum of Kronecker products `Σ_i s_i A_i ⊗ B_i`, applied without forming `A ⊗ B`:
/// for a row `x` viewed as `X [m1, m2]`, `y = vec(Aᵀ X B)` (row-major HF layout), all terms in two
/// GEMMs (`KroneckerProduct`). With `scaled`, each term has a learnable scale `s_i` (parameter
/// `<prefix>.kron.<i>.s`, Krony-PT): it starts at ‖W‖_F / ‖Σ A_i ⊗ B_i‖_F, so the initial weight
/// keeps the norm of the dense one.
public final class KroneckerComponent: KroneckerStructured, FactorizedForm, QuantizableForm {
    public static let kind = "kronecker"
    public let shape: KroneckerShape
    public let terms: Int
    /// Rank of each low-rank factor (nil: dense factor).
    public let factorRankA: Int?
    public let factorRankB: Int?
    /// Learnable per-term scales.
    public let scaled: Bool
    public let prefix: String
    /// Parameter names by term and part, made once.
    private let names: [[String: String]]

    public init(prefix: String, shape: KroneckerShape, terms: Int, factorRankA: Int? = nil, factorRankB: Int? = nil, scaled: Bool = false) {
        self.prefix = prefix
        self.shape = shape
        self.terms = terms
        self.factorRankA = factorRankA
        self.factorRankB = factorRankB
        self.scaled = scaled
        names = (0..<terms).map { i in
            Dictionary(uniqueKeysWithValues: ["a", "b", "a0", "a1", "b0", "b1", "s"].map { ($0, "\(prefix).kron.\(i).\($0)") })
        }
    }

    public var configEntry: [String: JSONValue] {
        var o: [String: JSONValue] = ["kind": .string(Self.kind), "m1": .number(Double(shape.m1)), "n1": .number(Double(shape.n1)),
                                      "m2": .number(Double(shape.m2)), "n2": .number(Double(shape.n2)), "terms": .number(Double(terms))]
        if let r = factorRankA { o["factor_rank_a"] = .number(Double(r)) }
        if let r = factorRankB { o["factor_rank_b"] = .number(Double(r)) }
        if scaled { o["scaled"] = .bool(true) }
        return o
    }

    public var summary: String {
        let s = shape
        var t = "kronecker [\(s.m1)x\(s.n1)]⊗[\(s.m2)x\(s.n2)] x\(terms)"
        if factorRankA != nil || factorRankB != nil { t += " (factor ranks \(factorRankA ?? 0), \(factorRankB ?? 0))" }
        return t + (scaled ? " scaled" : "")
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

    public var inFeatures: Int { shape.m1 * shape.m2 }
    public var outFeatures: Int { shape.n1 * shape.n2 }

    /// The name of term `term`'s parameter `part` ("a", "b", "a0", "a1", "b0", "b1", "s").
    public func name(_ term: Int, _ part: String) -> String { names[term][part] ?? "\(prefix).kron.\(term).\(part)" }

    public var parameters: [(name: String, shape: [Int])] {
        let s = shape
        return (0..<terms).flatMap { i -> [(name: String, shape: [Int])] in
            (factorRankA.map { r in [(name(i, "a0"), [s.m1, r]), (name(i, "a1"), [s.n1, r])] } ?? [(name(i, "a"), [s.m1, s.n1])]) +
            (factorRankB.map { r in [(name(i, "b0"), [s.m2, r]), (name(i, "b1"), [s.n2, r])] } ?? [(name(i, "b"), [s.m2, s.n2])]) +
            (scaled ? [(name(i, "s"), [1])] : [])
        }
    }

    /// Aᵀ X B reduces over m1 (axis 0 of A [m1, n1]) and m2 (axis 0 of B [m2, n2]); a low-rank
    /// factor F = F0 F1ᵀ over its rows (F0) then its rank (F1). Scales stay F32.
    public var quantizableMatrices: [(name: String, inputAxis: Int)] {
        (0..<terms).flatMap { i -> [(name: String, inputAxis: Int)] in
            (factorRankA == nil ? [(name(i, "a"), 0)] : [(name(i, "a0"), 0), (name(i, "a1"), 1)])
                + (factorRankB == nil ? [(name(i, "b"), 0)] : [(name(i, "b0"), 0), (name(i, "b1"), 1)])
        }
    }

    public var counts: (stored: Int, nonZero: Int) {
        let a = factorRankA.map { $0 * (shape.m1 + shape.n1) } ?? shape.m1 * shape.n1
        let b = factorRankB.map { $0 * (shape.m2 + shape.n2) } ?? shape.m2 * shape.n2
        let n = terms * (a + b + (scaled ? 1 : 0))
        return (n, n)
    }

    // MARK: - Factors

    /// Term i's scale (1 without `scaled`).
    public func scale(_ i: Int, params: ParameterSet) -> Float { scaled ? params.value(name(i, "s"))[0] : 1 }

    /// Factor `A_i [m1, n1]` (materialized from `A0 A1ᵀ` when low rank).
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

    /// Every term's factors with the scale folded into A: (s_i A_i, B_i).
    func scaledFactors(params: ParameterSet) -> (a: [[Float]], b: [[Float]]) {
        ((0..<terms).map { i in let s = scale(i, params: params); return factorA(i, params: params).map { $0 * s } },
         (0..<terms).map { factorB($0, params: params) })
    }

    /// Adds a factor gradient `dF [rows, cols]` to the parameters it came from.
    private func addFactorGrad(_ i: Int, _ p: String, _ dF: UnsafePointer<Float>, rows: Int, cols: Int, rank: Int?, params: ParameterSet) {
        guard let r = rank else {
            add(dF, into: params.grad(name(i, p)), count: rows * cols)
            return
        }
        // F = F0 F1ᵀ: dF0 [rows, r] += dF · F1; dF1 [cols, r] += dFᵀ · F0
        sgemm(m: rows, n: r, k: cols, a: dF, b: params.value(name(i, p + "1")), beta: 1, c: params.grad(name(i, p + "0")))
        sgemm(transA: true, m: cols, n: r, k: rows, a: dF, b: params.value(name(i, p + "0")), beta: 1, c: params.grad(name(i, p + "1")))
    }

    /// Factor gradients of term i from G_A (the gradient with the scale at 1) and dB: the scale's
    /// gradient is <G_A, A> (the term is linear in A), A's own is s·G_A. Overwrites gA.
    func addTermGradients(_ i: Int, gA: UnsafeMutablePointer<Float>, dB: UnsafePointer<Float>, params: ParameterSet) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        if scaled {
            let a = factorA(i, params: params), s = scale(i, params: params)
            params.grad(name(i, "s"))[0] += Float(dot8(gA, a, count: m1 * n1))
            Kernels.scale(gA, count: m1 * n1, by: s)
        }
        addFactorGrad(i, "a", gA, rows: m1, cols: n1, rank: factorRankA, params: params)
        addFactorGrad(i, "b", dB, rows: m2, cols: n2, rank: factorRankB, params: params)
    }

    // MARK: - Passes (the GEMMs are in KroneckerProduct)

    public func savedFloats(rows N: Int) -> Int { Arena.floats { _ = KroneckerProduct.Saved($0, shape: shape, terms: terms, rows: N) } }

    public func scratchFloats(rows N: Int) -> Int {
        let (s, k) = (shape, terms)
        return max(Arena.floats { _ = KroneckerProduct.Saved($0, shape: s, terms: k, rows: N); KroneckerProduct.forwardScratch($0, s, k, N) },
                   Arena.floats { KroneckerProduct.backwardScratch($0, s, k, N) },
                   Arena.floats { _ = KroneckerProduct.Saved($0, shape: s.transposed, terms: k, rows: N); KroneckerProduct.forwardScratch($0, s.transposed, k, N) })
    }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet, buffers: ComponentBuffers) {
        let scratch = Arena(base: buffers.scratch)
        // The inference forward keeps nothing: its "saved" buffers are scratch.
        let saved = KroneckerProduct.Saved(buffers.saved.map { Arena(base: $0) } ?? scratch, shape: shape, terms: terms, rows: N)
        let f = scaledFactors(params: params)
        KroneckerProduct.concatenate(a: f.a, b: f.b, shape: shape, into: saved)
        KroneckerProduct.forward(x, N: N, out: out, shape: shape, terms: terms, saved: saved, scratch: scratch)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet, buffers: ComponentBuffers) {
        guard let s = buffers.saved else { preconditionFailure("KroneckerComponent.backward: no saved activations") }
        let saved = KroneckerProduct.Saved(Arena(base: s), shape: shape, terms: terms, rows: N)
        KroneckerProduct.backward(x, dout: dout, dx: dx, accumulate: accumulate, N: N, shape: shape, terms: terms, saved: saved,
                                  scratch: Arena(base: buffers.scratch)) { i, gA, dB in
            addTermGradients(i, gA: gA, dB: dB, params: params)
        }
    }

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                                   params: ParameterSet, scratch: UnsafeMutablePointer<Float>) {
        if !accumulate { y.update(repeating: 0, count: N * inFeatures) }
        // Wᵀ = Σ s_i A_iᵀ ⊗ B_iᵀ: the same product on the transposed factors.
        let t = shape.transposed, arena = Arena(base: scratch)
        let saved = KroneckerProduct.Saved(arena, shape: t, terms: terms, rows: N)
        let f = scaledFactors(params: params)
        KroneckerProduct.concatenate(a: f.a.map { transpose($0, shape.m1, shape.n1) }, b: f.b.map { transpose($0, shape.m2, shape.n2) },
                                     shape: t, into: saved)
        KroneckerProduct.forward(x, N: N, out: y, shape: t, terms: terms, saved: saved, scratch: arena)
    }

    public func gatherRows(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                           scratch: UnsafeMutablePointer<Float>) {
        // Row i = (p, r) with i = p·m2 + r: W[(p, r), (q, t)] = Σ s A[p, q] B[r, t]. Factors once per batch.
        let (n1, m2, n2) = (shape.n1, shape.m2, shape.n2), f = scaledFactors(params: params)
        parallelFor(ids.count, minChunk: 16) { rows in
            for k in rows {
                let i = Int(ids[k]), p = i / m2, r = i % m2, row = dst + k * n1 * n2
                for (a, b) in zip(f.a, f.b) {
                    for q in 0..<n1 {
                        let apq = a[p * n1 + q]
                        for t in 0..<n2 { row[q * n2 + t] += apq * b[r * n2 + t] }
                    }
                }
            }
        }
    }

    public func gatherRowsBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                                   scratch: UnsafeMutablePointer<Float>) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        for term in 0..<terms {
            let a = factorA(term, params: params), b = factorB(term, params: params), s = scale(term, params: params)
            var gA = [Float](repeating: 0, count: m1 * n1), gB = [Float](repeating: 0, count: m2 * n2)
            for k in ids.indices {
                let i = Int(ids[k]), p = i / m2, r = i % m2, g = d + k * n1 * n2
                for q in 0..<n1 {
                    for t in 0..<n2 {
                        gA[p * n1 + q] += g[q * n2 + t] * b[r * n2 + t]          // with the scale at 1
                        gB[r * n2 + t] += s * g[q * n2 + t] * a[p * n1 + q]
                    }
                }
            }
            addTermGradients(term, gA: &gA, dB: gB, params: params)
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor {
        let f = scaledFactors(params: params)
        return kroneckerSum(a: f.a, b: f.b, shape: shape)
    }

    // MARK: - Capabilities

    /// The factors concatenated once (F32: they are small).
    public func packed(params: ParameterSet, precision: PackedPrecision) throws -> PackedOperator {
        let f = scaledFactors(params: params)
        return PackedKronecker(shape: shape, a: f.a, b: f.b)
    }

    public func withLowRankFactors(params: ParameterSet, rank: (Tensor) throws -> Int,
                                   factorize: (Tensor, Int) throws -> (w0: Tensor, w1: Tensor)) throws -> (WeightComponent, [String: Tensor]) {
        let s = shape
        var ra = 0, rb = 0
        var parts: [(Tensor, Tensor)] = []
        for i in 0..<terms {
            let a = try Tensor(shape: [s.m1, s.n1], data: factorA(i, params: params)), b = try Tensor(shape: [s.m2, s.n2], data: factorB(i, params: params))
            ra = max(ra, try rank(a)); rb = max(rb, try rank(b))
            parts.append((a, b))
        }
        let new = KroneckerComponent(prefix: prefix, shape: s, terms: terms, factorRankA: ra, factorRankB: rb, scaled: scaled)
        var tensors: [String: Tensor] = [:]
        for (i, (a, b)) in parts.enumerated() {
            let fa = try factorize(a, ra), fb = try factorize(b, rb)
            tensors[new.name(i, "a0")] = fa.w0; tensors[new.name(i, "a1")] = fa.w1
            tensors[new.name(i, "b0")] = fb.w0; tensors[new.name(i, "b1")] = fb.w1
            if scaled { tensors[new.name(i, "s")] = try Tensor(shape: [1], data: [scale(i, params: params)]) }
        }
        return (new, tensors)
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

/// A row-major [rows, cols] matrix transposed.
func transpose(_ m: [Float], _ rows: Int, _ cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: m.count)
    for r in 0..<rows { for c in 0..<cols { t[c * rows + r] = m[r * cols + c] } }
    return t
}
