import Kernels
import Tensor

/// A layer whose weight `W [in, out]` is a sum of components (dense/masked, low rank, Kronecker):
/// the block linears and the token embedding. Compression works on this, whatever the layer.
public protocol WeightedLayer: AnyObject {
    /// "wte" or the HF prefix of a linear (`h.0.mlp.c_fc`).
    var name: String { get }
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    var components: [WeightComponent] { get set }
    /// Whether the layer multiplies activations (calibrated pruning needs its inputs); the
    /// embedding looks rows up instead.
    var multipliesActivations: Bool { get }
}

extension WeightedLayer {
    /// The dense `[in, out]` weight (sum of the components).
    public func denseWeight(params: ParameterSet) -> Tensor {
        var w = Tensor(shape: [inFeatures, outFeatures])
        for c in components {
            let d = c.denseWeight(params: params)
            for i in 0..<w.count { w.data[i] += d.data[i] }
        }
        return w
    }

    /// The layer's only component (nil when it is a sum of several).
    public var single: WeightComponent? { components.count == 1 ? components[0] : nil }

    /// The component pruning applies to: the layer's only component, when it can be masked.
    public var maskable: Maskable? { single as? Maskable }

    /// A single unmasked dense weight: what an uncompressed layer is.
    public var isUncompressed: Bool { maskable.map { $0.mask == nil } ?? false }

    /// The pruning mask of a layer that is one maskable weight (nil otherwise, or unpruned).
    public var mask: BitMask? {
        get { maskable?.mask }
        set { maskable?.mask = newValue }
    }

    /// Re-applies the masks of every masked part to the weights.
    public func applyMasks(params: ParameterSet) {
        for c in components { for m in c.maskedParts { m.applyMask(params: params) } }
    }

    /// Zeroes gradients of masked weights (before the optimizer).
    public func maskGradients(params: ParameterSet) {
        for c in components { for m in c.maskedParts { m.maskGradient(params: params) } }
    }

    /// A few words for reports and messages ("dense", "sparse", "lowrank r=96+sparse"); never
    /// matched on: code asks the capabilities (`maskable`, `single as? KroneckerStructured`, ...).
    public var summary: String { components.map(\.summary).joined(separator: "+") }

    /// Stored scalars of the weight and those not structurally zero (biases excluded).
    public var counts: (stored: Int, nonZero: Int) {
        components.reduce((0, 0)) { ($0.0 + $1.counts.stored, $0.1 + $1.counts.nonZero) }
    }

    /// Floats the components keep for backward for N rows, and the scratch the largest needs.
    public func savedFloats(rows N: Int) -> Int { components.reduce(0) { $0 + Arena.rounded($1.savedFloats(rows: N)) } }
    public func scratchFloats(rows N: Int) -> Int { components.map { $0.scratchFloats(rows: N) }.max() ?? 0 }
}
