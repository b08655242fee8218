import Kernels
import Tensor

/// A linear layer: bias plus a sum of weight components. Named by its HF prefix
/// (e.g. `h.0.mlp.c_fc`); parameters are `<prefix>.bias` and the components' own.
public final class Linear: WeightedLayer {
    public let name: String
    public let biasName: String
    public let inFeatures: Int
    public let outFeatures: Int
    public var components: [WeightComponent]

    public init(name: String, inFeatures: Int, outFeatures: Int, components: [WeightComponent]) {
        self.name = name
        self.biasName = name + ".bias"
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.components = components
    }

    /// An uncompressed layer: one dense weight `<name>.weight`.
    public convenience init(dense name: String, inFeatures: Int, outFeatures: Int) {
        self.init(name: name, inFeatures: inFeatures, outFeatures: outFeatures,
                  components: [DenseComponent(weightName: name + ".weight", inFeatures: inFeatures, outFeatures: outFeatures)])
    }

    public var multipliesActivations: Bool { true }

    /// out [N, out] = x [N, in] · W + b. `saved[k]` is component k's slice of the training arena
    /// (nil: the inference forward).
    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet,
                        saved: [UnsafeMutablePointer<Float>]? = nil, scratch: UnsafeMutablePointer<Float>) {
        let b = params.value(biasName)
        let n = outFeatures
        parallelFor(N, minChunk: 32) { rows in
            for i in rows { (out + i * n).update(from: b, count: n) }
        }
        for (k, c) in components.enumerated() {
            c.forward(x: x, N: N, out: out, params: params, buffers: ComponentBuffers(saved: saved?[k], scratch: scratch))
        }
    }

    /// Accumulates parameter gradients and writes dx [N, in] (if given) from dout [N, out].
    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, N: Int,
                         params: ParameterSet, saved: [UnsafeMutablePointer<Float>], scratch: UnsafeMutablePointer<Float>) {
        let db = params.grad(biasName)
        let n = outFeatures
        // Column sums of dout, accumulated in row order (deterministic).
        for i in 0..<N {
            let row = dout + i * n
            for j in 0..<n { db[j] += row[j] }
        }
        for (k, c) in components.enumerated() {
            c.backward(x: x, dout: dout, dx: dx, accumulate: k > 0, N: N, params: params,
                       buffers: ComponentBuffers(saved: saved[k], scratch: scratch))
        }
    }
}
