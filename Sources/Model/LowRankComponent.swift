import Kernels
import Tensor

/// A low-rank weight `W = W0 · W1ᵀ` with `W0 [in, r]` and `W1 [out, r]`: two thin GEMMs.
/// Parameters `<layer>.lowrank.w0` and `<layer>.lowrank.w1` (`wte.lowrank.*` for the embedding).
public final class LowRankComponent: RankedForm, QuantizableForm {
    public static let kind = "lowrank"
    public let inFeatures: Int
    public let outFeatures: Int
    public let rank: Int
    public let w0Name: String
    public let w1Name: String

    /// The low-rank component of layer `layer` ("wte" or a linear's prefix).
    public init(layer: String, inFeatures: Int, outFeatures: Int, rank: Int) {
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.rank = rank
        w0Name = layer + ".lowrank.w0"
        w1Name = layer + ".lowrank.w1"
    }

    public var parameters: [(name: String, shape: [Int])] { [(w0Name, [inFeatures, rank]), (w1Name, [outFeatures, rank])] }
    /// x · W0 reduces over `in` (axis 0 of W0 [in, r]), then · W1ᵀ over r (axis 1 of W1 [out, r]).
    public var quantizableMatrices: [(name: String, inputAxis: Int)] { [(w0Name, 0), (w1Name, 1)] }
    public var configEntry: [String: JSONValue] { ["kind": .string(Self.kind), "rank": .number(Double(rank))] }
    public var summary: String { "lowrank r=\(rank)" }

    /// `{"kind": "lowrank", "rank": r}`.
    public static func decode(_ entry: [String: JSONValue], layer: String, inFeatures i: Int, outFeatures o: Int, at: String) throws -> LowRankComponent {
        guard let r = entry["rank"]?.intValue, r > 0, r <= min(i, o) else { throw ModelError.input("\(at): lowrank needs 1 <= rank <= \(min(i, o))") }
        return LowRankComponent(layer: layer, inFeatures: i, outFeatures: o, rank: r)
    }

    /// x · W0 (W0 [in, r] read where it lies in F32), then · W1ᵀ (W1 [out, r] already rows).
    public func packed(params: ParameterSet, precision: PackedPrecision) throws -> PackedOperator {
        let w0 = UnsafePointer(params.value(w0Name)), w1 = UnsafePointer(params.value(w1Name))
        let first: PackedOperator = precision == .f32 ? PackedHF(w0, inFeatures: inFeatures, outFeatures: rank, owner: params)
                                                      : Packing.rows(w0, inFeatures: inFeatures, outFeatures: rank, precision: precision)
        return PackedLowRank(first: first, second: Packing.rowMajor(w1, rows: outFeatures, cols: rank, precision: precision, owner: params))
    }

    /// Forward keeps h = x · W0 [N, r].
    public func savedFloats(rows N: Int) -> Int { N * rank }
    /// dh [N, r] in backward; x · W1 [N, r] in the transposed product; gathered W0 rows [N, r]
    /// (and their gradients) for lookups; h itself in the inference forward.
    public func scratchFloats(rows N: Int) -> Int { 2 * N * rank }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet, buffers: ComponentBuffers) {
        // h [N, r] = x [N, in] · W0 [in, r];  out [N, out] += h · W1ᵀ
        let h = buffers.saved ?? buffers.scratch
        sgemm(m: N, n: rank, k: inFeatures, a: x, b: params.value(w0Name), c: h)
        sgemm(transB: true, m: N, n: outFeatures, k: rank, a: h, b: params.value(w1Name), beta: 1, c: out)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet, buffers: ComponentBuffers) {
        guard let h = buffers.saved else { preconditionFailure("LowRankComponent.backward: no saved activations") }
        let dh = buffers.scratch
        // dW1 [out, r] += dYᵀ [out, N] · h [N, r];  dh [N, r] = dY · W1
        sgemm(transA: true, m: outFeatures, n: rank, k: N, a: dout, b: h, beta: 1, c: params.grad(w1Name))
        sgemm(m: N, n: rank, k: outFeatures, a: dout, b: params.value(w1Name), c: dh)
        // dW0 [in, r] += xᵀ · dh;  dx [N, in] (+)= dh · W0ᵀ
        sgemm(transA: true, m: inFeatures, n: rank, k: N, a: x, b: dh, beta: 1, c: params.grad(w0Name))
        if let dx { sgemm(transB: true, m: N, n: inFeatures, k: rank, a: dh, b: params.value(w0Name), beta: accumulate ? 1 : 0, c: dx) }
    }

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                                   params: ParameterSet, scratch: UnsafeMutablePointer<Float>) {
        // y [N, in] (+)= (x [N, out] · W1 [out, r]) · W0ᵀ [r, in]
        sgemm(m: N, n: rank, k: outFeatures, a: x, b: params.value(w1Name), c: scratch)
        sgemm(transB: true, m: N, n: inFeatures, k: rank, a: scratch, b: params.value(w0Name), beta: accumulate ? 1 : 0, c: y)
    }

    public func gatherRows(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                           scratch: UnsafeMutablePointer<Float>) {
        // dst [n, out] += W0[ids] [n, r] · W1ᵀ
        let w0 = params.value(w0Name), r = rank
        for k in ids.indices { (scratch + k * r).update(from: w0 + Int(ids[k]) * r, count: r) }
        sgemm(transB: true, m: ids.count, n: outFeatures, k: r, a: scratch, b: params.value(w1Name), beta: 1, c: dst)
    }

    public func gatherRowsBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                                   scratch: UnsafeMutablePointer<Float>) {
        let n = ids.count, r = rank, rows = scratch, dRows = scratch + n * r
        let w0 = params.value(w0Name), g0 = params.grad(w0Name)
        for k in ids.indices { (rows + k * r).update(from: w0 + Int(ids[k]) * r, count: r) }
        // dW1 [out, r] += dᵀ [out, n] · W0[ids] [n, r];  dW0[ids] [n, r] += d · W1
        sgemm(transA: true, m: outFeatures, n: r, k: n, a: d, b: rows, beta: 1, c: params.grad(w1Name))
        sgemm(m: n, n: r, k: outFeatures, a: d, b: params.value(w1Name), c: dRows)
        for k in ids.indices { add(dRows + k * r, into: g0 + Int(ids[k]) * r, count: r) }
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
