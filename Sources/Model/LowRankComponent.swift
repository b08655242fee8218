import Kernels
import Tensor

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

    public var configEntry: [String: JSONValue] { ["kind": .string(kind), "rank": .number(Double(rank))] }

    /// `{"kind": "lowrank", "rank": r}`.
    public static func decode(_ entry: [String: JSONValue], layer: String, inFeatures i: Int, outFeatures o: Int, at: String) throws -> LowRankComponent {
        guard let r = entry["rank"]?.intValue, r > 0, r <= min(i, o) else { throw ModelError.input("\(at): lowrank needs 1 <= rank <= \(min(i, o))") }
        return LowRankComponent(prefix: "\(layer).lowrank", inFeatures: i, outFeatures: o, rank: r)
    }

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

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, params: ParameterSet) {
        // y [N, in] (+)= (x [N, out] · W1 [out, r]) · W0ᵀ [r, in]
        var t = [Float](repeating: 0, count: N * rank)
        sgemm(m: N, n: rank, k: outFeatures, a: x, b: params.value(w1Name), c: &t)
        sgemm(transB: true, m: N, n: inFeatures, k: rank, a: t, b: params.value(w0Name), beta: accumulate ? 1 : 0, c: y)
    }

    public func addRow(_ i: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet) {
        // row i = W0[i] [r] · W1ᵀ [r, out]
        let e0 = params.value(w0Name) + i * rank, e1 = params.value(w1Name)
        for c in 0..<outFeatures {
            var s: Float = 0
            for k in 0..<rank { s += e0[k] * e1[c * rank + k] }
            dst[c] += s
        }
    }

    public func rowGradient(_ i: Int, _ d: UnsafePointer<Float>, params: ParameterSet) {
        let e0 = params.value(w0Name) + i * rank, e1 = params.value(w1Name)
        let g0 = params.grad(w0Name) + i * rank, g1 = params.grad(w1Name)
        for c in 0..<outFeatures {
            let dc = d[c]
            for k in 0..<rank {
                g0[k] += dc * e1[c * rank + k]
                g1[c * rank + k] += dc * e0[k]
            }
        }
    }

    public func denseWeight(params: ParameterSet) -> Tensor {
        do { return try params.tensor(w0Name).matmul(params.tensor(w1Name), transposeOther: true) }
        catch { preconditionFailure("\(w0Name) x \(w1Name)ᵀ: factor shapes are fixed at construction: \(error)") }
    }

    public var counts: (stored: Int, nonZero: Int) {
        let n = (inFeatures + outFeatures) * rank
        return (n, n)
    }
}
