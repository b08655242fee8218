import Kernels
import Tensor

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

    public var configEntry: [String: JSONValue] {
        var o: [String: JSONValue] = ["kind": .string(kind), "sparse": .bool(bits != nil)]
        if weightName.hasSuffix(".sparse") { o["name"] = .string("sparse") }
        return o
    }

    /// `{"kind": "dense", "sparse": bool, "name": "weight" | "sparse"}` (the mask itself is the
    /// weights file's bitmask).
    public static func decode(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> DenseComponent {
        let sub = entry["name"]?.stringValue ?? "weight"
        guard sub == "weight" || sub == "sparse" else { throw ModelError.input("\(at): dense name must be 'weight' or 'sparse'") }
        return DenseComponent(weightName: "\(layer).\(sub)", inFeatures: inFeatures, outFeatures: outFeatures)
    }

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

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, params: ParameterSet) {
        // y [N, in] (+)= x [N, out] · Wᵀ
        sgemm(transB: true, m: N, n: inFeatures, k: outFeatures, a: x, b: params.value(weightName), beta: accumulate ? 1 : 0, c: y)
    }

    public func addRow(_ i: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet) {
        let w = params.value(weightName) + i * outFeatures
        for c in 0..<outFeatures { dst[c] += w[c] }
    }

    public func rowGradient(_ i: Int, _ d: UnsafePointer<Float>, params: ParameterSet) {
        let g = params.grad(weightName) + i * outFeatures
        for c in 0..<outFeatures { g[c] += d[c] }
    }

    public func denseWeight(params: ParameterSet) -> Tensor { params.tensor(weightName) }

    public var counts: (stored: Int, nonZero: Int) {
        let n = inFeatures * outFeatures
        guard let bits else { return (n, n) }
        return (bits.kept, bits.kept)
    }

    public func applyMask(params: ParameterSet) { bits?.apply(to: params.value(weightName)) }

    public func maskGradient(params: ParameterSet) { bits?.apply(to: params.grad(weightName)) }
}
