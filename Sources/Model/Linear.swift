import Kernels
import Tensor

/// One additive part of a linear layer's weight `W [in, out]` (HF Conv1D layout, `y = x W + b`).
/// A layer's weight is the sum of its components: dense (optionally masked), low rank, Kronecker.
/// Each form describes itself (its parameters, its config.json entry, how to read that entry
/// back), so a new form is one new file plus its line in `weightForms`.
public protocol WeightComponent: AnyObject {
    /// "dense", "lowrank" or "kronecker" (written to config.json's compression section).
    var kind: String { get }
    /// The component's entry in config.json's `compression.layers` (with its "kind").
    var configEntry: [String: JSONValue] { get }
    /// The component of layer `layer` ([in, out] = [inFeatures, outFeatures]) described by a
    /// config entry of this kind; errors name `at`.
    static func decode(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> Self
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Names and shapes of the parameters this component owns (all weight-decayed).
    var parameters: [(name: String, shape: [Int])] { get }
    /// out [N, out] += x [N, in] · W
    func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet)
    /// Accumulates parameter gradients; dx [N, in] = (beta ? dx : 0) + dY · Wᵀ.
    func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                  N: Int, params: ParameterSet)
    /// y [N, in] (+)= x [N, out] · Wᵀ without any gradient (a tied output head's logits).
    func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool, params: ParameterSet)
    /// dst [out] += row i of W (an embedding lookup).
    func addRow(_ i: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet)
    /// Accumulates the parameter gradients of a lookup of row i whose gradient is d [out].
    func rowGradient(_ i: Int, _ d: UnsafePointer<Float>, params: ParameterSet)
    /// The dense `[in, out]` matrix this component represents.
    func denseWeight(params: ParameterSet) -> Tensor
    /// Stored scalars, and those that are not structurally zero.
    var counts: (stored: Int, nonZero: Int) { get }
}

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

    /// Stored scalars of the weight and those not structurally zero (biases excluded).
    public var counts: (stored: Int, nonZero: Int) {
        components.reduce((0, 0)) { ($0.0 + $1.counts.stored, $0.1 + $1.counts.nonZero) }
    }

    /// The first dense component's pruning mask (nil when unpruned or not dense).
    public var pruningMask: BitMask? {
        get { (components.first as? DenseComponent)?.bits }
        set { (components.first as? DenseComponent)?.bits = newValue }
    }
}

/// A linear layer: bias plus a sum of weight components. Named by its HF prefix
/// (e.g. `h.0.mlp.c_fc`); parameters are `<prefix>.bias` and the components' own.
public final class Linear: WeightedLayer {
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
    public var multipliesActivations: Bool { true }

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
}

/// Every weight form, by its config.json kind.
public let weightForms: [String: WeightComponent.Type] = [
    "dense": DenseComponent.self, "lowrank": LowRankComponent.self, "kronecker": KroneckerComponent.self,
]

/// A component read from its config.json entry; errors name `at`.
public func decodeWeightComponent(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> WeightComponent {
    guard let kind = entry["kind"]?.stringValue else { throw ModelError.input("\(at): each component needs a 'kind'") }
    guard let form = weightForms[kind] else {
        throw ModelError.input("\(at): unknown component kind '\(kind)' (\(weightForms.keys.sorted().joined(separator: ", ")))")
    }
    return try form.decode(entry, layer: layer, inFeatures: inFeatures, outFeatures: outFeatures, at: at)
}
