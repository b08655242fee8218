import Kernels
import Tensor

/// The token embedding `wte [V, C]`, tied to the output head (as in GPT-2). Its weight is a sum of
/// the same components as a linear layer's (`in` = V, `out` = C): dense (optionally pruned), low
/// rank (`wte.w0 [V, r]`, `wte.w1 [C, r]`) or a sum of Kronecker products. A lookup is a row of W;
/// the head's logits are `h · Wᵀ`.
public final class TokenEmbedding: WeightedLayer {
    public let name = "wte"
    public let vocab: Int
    public let channels: Int
    public var components: [WeightComponent]
    public var inFeatures: Int { vocab }
    public var outFeatures: Int { channels }
    public var multipliesActivations: Bool { false }

    public static let denseName = "wte.weight"
    public static let w0Name = "wte.w0"
    public static let w1Name = "wte.w1"

    /// A dense embedding (optionally low rank or pruned, the forms older files name directly).
    public init(vocab: Int, channels: Int, rank: Int? = nil, mask: [Float]? = nil) {
        self.vocab = vocab
        self.channels = channels
        if let r = rank {
            components = [LowRankComponent(prefix: "wte", inFeatures: vocab, outFeatures: channels, rank: r)]
        } else {
            components = [DenseComponent(weightName: Self.denseName, inFeatures: vocab, outFeatures: channels, mask: mask)]
        }
    }

    /// Names and shapes of the embedding's parameters.
    public var parameters: [(name: String, shape: [Int])] { components.flatMap(\.parameters) }

    /// The rank of a low-rank embedding (nil otherwise).
    public var rank: Int? { components.count == 1 ? (components[0] as? LowRankComponent)?.rank : nil }

    /// The pruning mask as 0/1 floats (nil when unpruned).
    public var mask: [Float]? {
        get { pruningMask?.floats }
        set { pruningMask = newValue.map(BitMask.init) }
    }

    /// Writes token `id`'s embedding row into `dst [C]`.
    public func row(_ id: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet) {
        if components.count == 1, let d = components[0] as? DenseComponent {
            dst.update(from: params.value(d.weightName) + id * channels, count: channels)
            return
        }
        dst.update(repeating: 0, count: channels)
        for c in components { c.addRow(id, into: dst, params: params) }
    }

    /// Accumulates the gradient of a lookup: `d W[id] += dx [C]`.
    public func rowBackward(_ id: Int, dx: UnsafePointer<Float>, params: ParameterSet) {
        for c in components { c.rowGradient(id, dx, params: params) }
    }

    /// Output head: logits [N, V] = h [N, C] · Wᵀ.
    public func headForward(h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, params: ParameterSet) {
        for (k, c) in components.enumerated() { c.multiplyTransposed(h, N: N, into: logits, accumulate: k > 0, params: params) }
    }

    /// Head backward: accumulates dW (+= dlogitsᵀ · h) and writes dh [N, C] = dlogits · W. (For
    /// the component, the head is a linear layer run backwards: x = dlogits, dY = h.)
    public func headBackward(h: UnsafePointer<Float>, dlogits: UnsafePointer<Float>, dh: UnsafeMutablePointer<Float>, N: Int, params: ParameterSet) {
        dh.update(repeating: 0, count: N * channels)
        for c in components {
            c.forward(x: dlogits, N: N, out: dh, params: params)
            c.backward(x: dlogits, dout: h, dx: nil, accumulate: false, N: N, params: params)
        }
    }
}
