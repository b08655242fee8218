import Kernels
import Tensor

/// The memory a component works in during one forward or backward of N rows. `saved` is what its
/// forward keeps for its backward (`savedFloats(rows:)` floats: the component's slice of the
/// training arena, nil in the inference forward, which keeps nothing); `scratch` is working
/// memory shared by every component and not kept (`scratchFloats(rows:)` floats).
public struct ComponentBuffers {
    public var saved: UnsafeMutablePointer<Float>?
    public var scratch: UnsafeMutablePointer<Float>
    public init(saved: UnsafeMutablePointer<Float>?, scratch: UnsafeMutablePointer<Float>) {
        self.saved = saved
        self.scratch = scratch
    }
}

/// One additive part of a layer's weight `W [in, out]` (HF Conv1D layout, `y = x W + b`). A layer's
/// weight is the sum of its components: dense (optionally masked), low rank, Kronecker. Each form
/// describes itself — its parameters, its config.json entry and how to read it back, the memory
/// its passes need, how it is stored — and adopts the capability protocols below that it has, so
/// a new form is one file plus its line in `weightForms` (WeightForms.swift).
public protocol WeightComponent: AnyObject {
    /// The form's name in config.json's compression section ("dense", "lowrank", "kronecker").
    static var kind: String { get }
    /// The component of layer `layer` ([in, out] = [inFeatures, outFeatures]) described by a
    /// config entry of this kind; errors name `at`.
    static func decode(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> Self
    /// The component's entry in config.json's `compression.layers` (with its "kind").
    var configEntry: [String: JSONValue] { get }
    /// A few words for reports and messages ("dense", "sparse", "lowrank r=96"); never matched on.
    var summary: String { get }
    var inFeatures: Int { get }
    var outFeatures: Int { get }
    /// Names and shapes of the parameters this component owns (all weight-decayed).
    var parameters: [(name: String, shape: [Int])] { get }
    /// Stored scalars, and those that are not structurally zero.
    var counts: (stored: Int, nonZero: Int) { get }

    /// Floats `forward` keeps in `buffers.saved` for `backward`, for N rows.
    func savedFloats(rows N: Int) -> Int
    /// Floats of scratch any pass over N rows (or N looked-up rows) uses.
    func scratchFloats(rows N: Int) -> Int

    /// out [N, out] += x [N, in] · W. With `buffers.saved`, keeps what `backward` needs there.
    func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet, buffers: ComponentBuffers)
    /// Accumulates parameter gradients; dx [N, in] = (accumulate ? dx : 0) + dY · Wᵀ. `buffers.saved`
    /// holds what the forward of the same rows kept.
    func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                  N: Int, params: ParameterSet, buffers: ComponentBuffers)
    /// y [N, in] (+)= x [N, out] · Wᵀ without any gradient (a tied output head's logits).
    func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                            params: ParameterSet, scratch: UnsafeMutablePointer<Float>)
    /// dst [n, out] += rows `ids` of W (embedding lookups, batched).
    func gatherRows(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                    scratch: UnsafeMutablePointer<Float>)
    /// Accumulates the parameter gradients of the lookups `ids` whose gradients are d [n, out].
    func gatherRowsBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                            scratch: UnsafeMutablePointer<Float>)
    /// The dense `[in, out]` matrix this component represents.
    func denseWeight(params: ParameterSet) -> Tensor

    /// Writes the component's parameters to a weights file (default: each parameter as its own
    /// tensor, `keyPrefix + name`).
    func store(in writer: inout SafeTensorsWriter, key: (String) -> String, params: ParameterSet, dtype: SafeTensorsDType)
    /// Checks, from the weights headers alone, that the tensors `store` writes are there with
    /// their shapes (before anything is allocated).
    func checkStored(in weights: WeightFiles, key: (String) -> String) throws
    /// Reads the stored parameters into `params` (with `fill`; without, only what the component
    /// itself keeps, such as a mask).
    func load(from weights: WeightFiles, key: (String) -> String, into params: ParameterSet, fill: Bool) throws

    /// The parts of this component whose weights a frozen mask prunes (itself, or a wrapped form).
    var maskedParts: [Maskable] { get }
    /// Memory the component keeps beside its parameters (masks, quantized blocks, copies), while
    /// training or not.
    func residentBytes(training: Bool) -> Int
    /// Bytes the component's weights take when saved with `valueBytes` per float (4 for F32, 2 for
    /// F16/BF16): values, masks, codes and scales — what the reports call a model's real bytes.
    func storedBytes(valueBytes: Int) -> Int

    /// The component in its packed inference form (read-only, its own kernels): `x · W` of a
    /// block linear. Dense F32 weights are read where they lie in `params`.
    func packed(params: ParameterSet, precision: PackedPrecision) throws -> PackedOperator
    /// The packed form read from the weight files, never touching the model's parameter buffer
    /// (a model loaded only to run forward). Default: the stored parameters read into a buffer of
    /// the component's own, packed from there (which the packed form keeps when it reads F32
    /// values in place, and which is freed otherwise: no dense copy stays beside the packed one).
    func packedFromStored(in weights: WeightFiles, key: (String) -> String, precision: PackedPrecision,
                          allowNonFinite: Bool) throws -> PackedOperator
}

extension WeightComponent {
    public var kind: String { Self.kind }
    public var maskedParts: [Maskable] { (self as? Maskable).map { [$0] } ?? [] }
    public func residentBytes(training: Bool) -> Int { maskedParts.reduce(0) { $0 + ($1.mask.map { ($0.count + 63) / 64 * 8 } ?? 0) } }
    public func storedBytes(valueBytes: Int) -> Int { valueBytes * counts.stored + maskedParts.reduce(0) { $0 + ($1.mask.map { ($0.count + 7) / 8 } ?? 0) } }

    public func store(in writer: inout SafeTensorsWriter, key: (String) -> String, params: ParameterSet, dtype: SafeTensorsDType) {
        for p in parameters {
            writer.add(key(p.name), shape: p.shape, pointer: params.value(p.name), dtype: dtype, owner: params)
        }
    }

    public func checkStored(in weights: WeightFiles, key: (String) -> String) throws {
        for p in parameters { try weights.expect(key(p.name), shape: p.shape) }
    }

    public func load(from weights: WeightFiles, key: (String) -> String, into params: ParameterSet, fill: Bool) throws {
        guard fill else { return }
        for p in parameters { try weights.readFloats(key(p.name), into: params.value(p.name)) }
    }

    public func packedFromStored(in weights: WeightFiles, key: (String) -> String, precision: PackedPrecision,
                                 allowNonFinite: Bool) throws -> PackedOperator {
        let own = ParameterSet(layout: parameters.map { ($0.name, $0.shape, true) })
        try load(from: weights, key: key, into: own, fill: true)
        if !allowNonFinite, let bad = own.firstNonFinite() {
            throw FileError.nonFinite(weights.url.path, tensor: key(bad.name), value: bad.value, index: bad.index)
        }
        return try packed(params: own, precision: precision)
    }
}

// MARK: - Capabilities

/// A form whose individual weights can be masked: pruning (magnitude, Wanda, SparseGPT) and N:M
/// sparsity apply to it. The mask is frozen: pruned weights stay exactly zero.
public protocol Maskable: WeightComponent {
    /// The parameter holding the weight.
    var weightName: String { get }
    /// The pruning mask; nil when nothing is pruned.
    var mask: BitMask? { get set }
}

extension Maskable {
    /// Zeroes the pruned weights (after an optimizer step).
    public func applyMask(params: ParameterSet) { mask?.apply(to: params.value(weightName)) }
    /// Zeroes the gradients of pruned weights (before the optimizer, so moments stay zero too).
    public func maskGradient(params: ParameterSet) { mask?.apply(to: params.grad(weightName)) }
}

/// A form that is a product of two thin factors of one rank (progressive low rank lowers it).
public protocol RankedForm: WeightComponent {
    var rank: Int { get }
}

/// A form built from smaller factor matrices that can themselves be made low rank (`lowrank` on a
/// Kronecker layer factors its Kronecker factors).
public protocol FactorizedForm: WeightComponent {
    /// The same form with each factor F replaced by a product of rank `rank(F)` (one rank per
    /// kind of factor: the largest asked for), and the new parameters by name.
    func withLowRankFactors(params: ParameterSet, rank: (Tensor) throws -> Int,
                            factorize: (Tensor, Int) throws -> (w0: Tensor, w1: Tensor)) throws -> (WeightComponent, [String: Tensor])
}

/// A form whose weight matrices can be stored in ggml's quantized blocks: each matrix with the
/// axis of its shape along which the layer's forward (`x · W`) reduces (its input dimension).
/// Blocks of 32 run along that axis; for the tied embedding, whose head multiplies by Wᵀ, along
/// the other one.
public protocol QuantizableForm: WeightComponent {
    var quantizableMatrices: [(name: String, inputAxis: Int)] { get }
}

/// A sum of Kronecker products of a fixed factor shape (a progressive Kronecker stage keeps the
/// shape and drops terms).
public protocol KroneckerStructured: WeightComponent {
    var shape: KroneckerShape { get }
    var terms: Int { get }
}
