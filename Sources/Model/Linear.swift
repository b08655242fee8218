import Kernels
import Tensor

/// One additive part of a linear layer's weight `W [in, out]` (HF Conv1D layout, `y = x W + b`).
/// A layer's weight is the sum of its components: dense (optionally masked), low rank, Kronecker.
public protocol WeightComponent: AnyObject {
    /// "dense", "lowrank" or "kronecker" (written to config.json's compression section).
    var kind: String { get }
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Names and shapes of the parameters this component owns (all weight-decayed).
    var parameters: [(name: String, shape: [Int])] { get }
    /// out [N, out] += x [N, in] · W
    func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet)
    /// Accumulates parameter gradients; dx [N, in] = (beta ? dx : 0) + dY · Wᵀ.
    func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                  N: Int, params: ParameterSet)
    /// The dense `[in, out]` matrix this component represents.
    func denseWeight(params: ParameterSet) -> Tensor
    /// Stored scalars, and those that are not structurally zero.
    func counts(params: ParameterSet) -> (stored: Int, nonZero: Int)
}

/// A linear layer: bias plus a sum of weight components. Named by its HF prefix
/// (e.g. `h.0.mlp.c_fc`); parameters are `<prefix>.bias` and the components' own.
public final class Linear {
    public let name: String
    public let inFeatures: Int
    public let outFeatures: Int
    public var components: [WeightComponent]

    public init(name: String, inFeatures: Int, outFeatures: Int, components: [WeightComponent]) {
        self.name = name
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.components = components
    }

    public var biasName: String { name + ".bias" }

    /// out [N, out] = x [N, in] · W + b
    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet) {
        let b = params.value(biasName)
        let n = outFeatures
        parallelFor(N, minChunk: 32) { rows in
            for i in rows { (out + i * n).update(from: b, count: n) }
        }
        for c in components { c.forward(x: x, N: N, out: out, params: params) }
    }

    /// Accumulates parameter gradients and writes dx [N, in] (if given) from dout [N, out].
    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, N: Int, params: ParameterSet) {
        let db = params.grad(biasName)
        let n = outFeatures
        // Column sums of dout, accumulated in row order (deterministic).
        for i in 0..<N {
            let row = dout + i * n
            for j in 0..<n { db[j] += row[j] }
        }
        for (k, c) in components.enumerated() {
            c.backward(x: x, dout: dout, dx: dx, accumulate: k > 0, N: N, params: params)
        }
    }

    /// The dense `[in, out]` weight (sum of the components).
    public func denseWeight(params: ParameterSet) -> Tensor {
        var w = Tensor(shape: [inFeatures, outFeatures])
        for c in components {
            let d = c.denseWeight(params: params)
            for i in 0..<w.count { w.data[i] += d.data[i] }
        }
        return w
    }

    /// The dense components' masks, if any, applied to weights (after an optimizer step).
    public func applyMasks(params: ParameterSet) {
        for case let d as DenseComponent in components { d.applyMask(params: params) }
    }

    /// Zeroes gradients of pruned weights (before the optimizer), so moments stay zero too.
    public func maskGradients(params: ParameterSet) {
        for case let d as DenseComponent in components { d.maskGradient(params: params) }
    }

    /// A one-word description: "dense", "sparse", "lowrank", "kronecker", "lowrank+sparse"...
    public var form: String {
        components.map { c -> String in
            if let d = c as? DenseComponent, d.bits != nil { return "sparse" }
            return c.kind
        }.joined(separator: "+")
    }
}

/// A dense weight `[in, out]`, optionally with a frozen 0/1 mask (pruning, N:M sparsity).
public final class DenseComponent: WeightComponent {
    public let kind = "dense"
    public let inFeatures: Int
    public let outFeatures: Int
    /// The parameter holding the weight (`<prefix>.weight`, or `<prefix>.sparse` for a residual).
    public let weightName: String
    /// The frozen pruning mask; nil for an unpruned layer.
    public var bits: BitMask?

    /// The mask as 0/1 floats (1 keeps a weight, 0 prunes it); nil for an unpruned layer.
    public var mask: [Float]? {
        get { bits?.floats }
        set { bits = newValue.map(BitMask.init) }
    }

    public init(weightName: String, inFeatures: Int, outFeatures: Int, mask: [Float]? = nil) {
        self.weightName = weightName
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.bits = mask.map(BitMask.init)
    }

    public var parameters: [(name: String, shape: [Int])] { [(weightName, [inFeatures, outFeatures])] }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet) {
        sgemm(m: N, n: outFeatures, k: inFeatures, a: x, b: params.value(weightName), beta: 1, c: out)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet) {
        // dW [in, out] += xᵀ [in, N] · dY [N, out]
        sgemm(transA: true, m: inFeatures, n: outFeatures, k: N, a: x, b: dout, beta: 1, c: params.grad(weightName))
        // dx [N, in] (+)= dY [N, out] · Wᵀ
        if let dx {
            sgemm(transB: true, m: N, n: inFeatures, k: outFeatures, a: dout, b: params.value(weightName),
                  beta: accumulate ? 1 : 0, c: dx)
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor { params.tensor(weightName) }

    public func counts(params: ParameterSet) -> (stored: Int, nonZero: Int) {
        let n = inFeatures * outFeatures
        guard let bits else { return (n, n) }
        return (bits.kept, bits.kept)
    }

    public func applyMask(params: ParameterSet) { bits?.apply(to: params.value(weightName)) }

    public func maskGradient(params: ParameterSet) { bits?.apply(to: params.grad(weightName)) }
}

/// A low-rank weight `W = W0 · W1ᵀ` with `W0 [in, r]` and `W1 [out, r]`: two thin GEMMs.
public final class LowRankComponent: WeightComponent {
    public let kind = "lowrank"
    public let inFeatures: Int
    public let outFeatures: Int
    public let rank: Int
    public let prefix: String
    private var hidden: [Float] = []   // x · W0 [N, r] saved for backward

    public init(prefix: String, inFeatures: Int, outFeatures: Int, rank: Int) {
        self.prefix = prefix
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.rank = rank
    }

    public var w0Name: String { prefix + ".w0" }
    public var w1Name: String { prefix + ".w1" }
    public var parameters: [(name: String, shape: [Int])] { [(w0Name, [inFeatures, rank]), (w1Name, [outFeatures, rank])] }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet) {
        if hidden.count < N * rank { hidden = [Float](repeating: 0, count: N * rank) }
        hidden.withUnsafeMutableBufferPointer { h in
            // h [N, r] = x [N, in] · W0 [in, r];  out [N, out] += h · W1ᵀ
            sgemm(m: N, n: rank, k: inFeatures, a: x, b: params.value(w0Name), c: h.baseAddress!)
            sgemm(transB: true, m: N, n: outFeatures, k: rank, a: h.baseAddress!, b: params.value(w1Name), beta: 1, c: out)
        }
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet) {
        var dh = [Float](repeating: 0, count: N * rank)
        hidden.withUnsafeBufferPointer { h in
            dh.withUnsafeMutableBufferPointer { d in
                // dW1 [out, r] += dYᵀ [out, N] · h [N, r];  dh [N, r] = dY · W1
                sgemm(transA: true, m: outFeatures, n: rank, k: N, a: dout, b: h.baseAddress!, beta: 1, c: params.grad(w1Name))
                sgemm(m: N, n: rank, k: outFeatures, a: dout, b: params.value(w1Name), c: d.baseAddress!)
                // dW0 [in, r] += xᵀ · dh;  dx [N, in] (+)= dh · W0ᵀ
                sgemm(transA: true, m: inFeatures, n: rank, k: N, a: x, b: d.baseAddress!, beta: 1, c: params.grad(w0Name))
                if let dx {
                    sgemm(transB: true, m: N, n: inFeatures, k: rank, a: d.baseAddress!, b: params.value(w0Name),
                          beta: accumulate ? 1 : 0, c: dx)
                }
            }
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor {
        try! params.tensor(w0Name).matmul(params.tensor(w1Name), transposeOther: true)
    }

    public func counts(params: ParameterSet) -> (stored: Int, nonZero: Int) {
        let n = (inFeatures + outFeatures) * rank
        return (n, n)
    }
}

/// Shape of one Kronecker term `A ⊗ B` with `A [m1, n1]`, `B [m2, n2]`, `in = m1 m2`,
/// `out = n1 n2`; each factor may itself be low rank (`A = A0 A1ᵀ`).
public struct KroneckerShape: Equatable, Sendable, Codable {
    public var m1: Int, n1: Int, m2: Int, n2: Int
    public init(m1: Int, n1: Int, m2: Int, n2: Int) { self.m1 = m1; self.n1 = n1; self.m2 = m2; self.n2 = n2 }
}

/// A sum of Kronecker products `Σ_i A_i ⊗ B_i`, applied without forming `A ⊗ B`:
/// for a row `x` viewed as `X [m1, m2]`, `y = vec(Aᵀ X B)` (row-major HF layout).
public final class KroneckerComponent: WeightComponent {
    public let kind = "kronecker"
    public let shape: KroneckerShape
    public let terms: Int
    /// Rank of each low-rank factor (nil: dense factor).
    public let factorRankA: Int?
    public let factorRankB: Int?
    public let prefix: String
    private var zt: [[Float]] = []     // per term: Z' [m1, N·n2] saved for backward
    private var aCache: [[Float]] = [], bCache: [[Float]] = []

    public init(prefix: String, shape: KroneckerShape, terms: Int, factorRankA: Int? = nil, factorRankB: Int? = nil) {
        self.prefix = prefix
        self.shape = shape
        self.terms = terms
        self.factorRankA = factorRankA
        self.factorRankB = factorRankB
    }

    public var inFeatures: Int { shape.m1 * shape.m2 }
    public var outFeatures: Int { shape.n1 * shape.n2 }

    public func name(_ term: Int, _ part: String) -> String { "\(prefix).kron.\(term).\(part)" }

    public var parameters: [(name: String, shape: [Int])] {
        let s = shape
        return (0..<terms).flatMap { i -> [(name: String, shape: [Int])] in
            (factorRankA.map { r in [(name(i, "a0"), [s.m1, r]), (name(i, "a1"), [s.n1, r])] } ?? [(name(i, "a"), [s.m1, s.n1])]) +
            (factorRankB.map { r in [(name(i, "b0"), [s.m2, r]), (name(i, "b1"), [s.n2, r])] } ?? [(name(i, "b"), [s.m2, s.n2])])
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

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        zt = Array(repeating: [], count: terms)
        aCache = (0..<terms).map { factorA($0, params: params) }
        bCache = (0..<terms).map { factorB($0, params: params) }
        var z = [Float](repeating: 0, count: N * m1 * n2)
        var y = [Float](repeating: 0, count: n1 * N * n2)
        for i in 0..<terms {
            var zp = [Float](repeating: 0, count: m1 * N * n2)
            z.withUnsafeMutableBufferPointer { zb in
                zp.withUnsafeMutableBufferPointer { zpb in
                    y.withUnsafeMutableBufferPointer { yb in
                        // Z [N·m1, n2] = X [N·m1, m2] · B [m2, n2]
                        sgemm(m: N * m1, n: n2, k: m2, a: x, b: bCache[i], c: zb.baseAddress!)
                        // Z' [m1, N·n2]: Z'[a, n·n2 + d] = Z[n, a, d]
                        permuteOuter(zb.baseAddress!, N, m1, n2, into: zpb.baseAddress!)
                        // Y' [n1, N·n2] = Aᵀ [n1, m1] · Z'
                        sgemm(transA: true, m: n1, n: N * n2, k: m1, a: aCache[i], b: zpb.baseAddress!, c: yb.baseAddress!)
                        // out[n, c, d] += Y'[c, n·n2 + d]
                        let yp = yb.baseAddress!
                        parallelFor(N, minChunk: 16) { rows in
                            for n in rows {
                                for c in 0..<n1 {
                                    let src = yp + c * N * n2 + n * n2, dst = out + n * n1 * n2 + c * n2
                                    for d in 0..<n2 { dst[d] += src[d] }
                                }
                            }
                        }
                    }
                }
            }
            zt[i] = zp
        }
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet) {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        // dY' [n1, N·n2]: dY'[c, n·n2 + d] = dY[n, c, d]
        var dyp = [Float](repeating: 0, count: n1 * N * n2)
        dyp.withUnsafeMutableBufferPointer { permuteOuter(dout, N, n1, n2, into: $0.baseAddress!) }
        var dzp = [Float](repeating: 0, count: m1 * N * n2)
        var dz = [Float](repeating: 0, count: N * m1 * n2)
        var dA = [Float](repeating: 0, count: m1 * n1)
        var dB = [Float](repeating: 0, count: m2 * n2)
        for i in 0..<terms {
            dyp.withUnsafeBufferPointer { dy in
                dzp.withUnsafeMutableBufferPointer { dzpb in
                    dz.withUnsafeMutableBufferPointer { dzb in
                        dA.withUnsafeMutableBufferPointer { da in
                            dB.withUnsafeMutableBufferPointer { db in
                                zt[i].withUnsafeBufferPointer { zp in
                                    // dA [m1, n1] = Z' [m1, N·n2] · dY'ᵀ
                                    sgemm(transB: true, m: m1, n: n1, k: N * n2, a: zp.baseAddress!, b: dy.baseAddress!, c: da.baseAddress!)
                                    // dZ' [m1, N·n2] = A [m1, n1] · dY'
                                    sgemm(m: m1, n: N * n2, k: n1, a: aCache[i], b: dy.baseAddress!, c: dzpb.baseAddress!)
                                    // dZ [N, m1, n2] from dZ'
                                    permuteInner(dzpb.baseAddress!, m1, N, n2, into: dzb.baseAddress!)
                                    // dB [m2, n2] = Xᵀ [m2, N·m1] · dZ [N·m1, n2]
                                    sgemm(transA: true, m: m2, n: n2, k: N * m1, a: x, b: dzb.baseAddress!, c: db.baseAddress!)
                                    // dX [N·m1, m2] (+)= dZ · Bᵀ
                                    if let dx {
                                        sgemm(transB: true, m: N * m1, n: m2, k: n2, a: dzb.baseAddress!, b: bCache[i],
                                              beta: (accumulate || i > 0) ? 1 : 0, c: dx)
                                    }
                                    addFactorGrad(i, "a", da.baseAddress!, rows: m1, cols: n1, rank: factorRankA, params: params)
                                    addFactorGrad(i, "b", db.baseAddress!, rows: m2, cols: n2, rank: factorRankB, params: params)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor {
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        var w = Tensor(shape: [m1 * m2, n1 * n2])
        for i in 0..<terms {
            let a = factorA(i, params: params), b = factorB(i, params: params)
            for p in 0..<m1 { for q in 0..<n1 {
                let apq = a[p * n1 + q]
                for r in 0..<m2 { for s in 0..<n2 {
                    w.data[(p * m2 + r) * (n1 * n2) + q * n2 + s] += apq * b[r * n2 + s]
                } }
            } }
        }
        return w
    }

    public func counts(params: ParameterSet) -> (stored: Int, nonZero: Int) {
        let a = factorRankA.map { ($0) * (shape.m1 + shape.n1) } ?? shape.m1 * shape.n1
        let b = factorRankB.map { ($0) * (shape.m2 + shape.n2) } ?? shape.m2 * shape.n2
        return (terms * (a + b), terms * (a + b))
    }
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

/// src [Q, P, R] -> dst [P, Q, R] (inverse of `permuteOuter(_, P, Q, R)`).
@inline(__always)
func permuteInner(_ src: UnsafePointer<Float>, _ Q: Int, _ P: Int, _ R: Int, into dst: UnsafeMutablePointer<Float>) {
    permuteOuter(src, Q, P, R, into: dst)
}
