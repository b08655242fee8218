import Kernels
import Tensor

/// The token embedding `wte [V, C]`, tied to the output head (as in GPT-2). Its weight is a sum of
/// the same components as a linear layer's (`in` = V, `out` = C): dense (optionally pruned), low
/// rank (`wte.lowrank.w0 [V, r]`, `wte.lowrank.w1 [C, r]`) or a sum of Kronecker products. A
/// lookup is a row of W; the head's logits are `h · Wᵀ`.
public final class TokenEmbedding: WeightedLayer {
    public let name = "wte"
    public let vocab: Int
    public let channels: Int
    public var components: [WeightComponent]
    public var inFeatures: Int { vocab }
    public var outFeatures: Int { channels }
    public var multipliesActivations: Bool { false }

    public static let denseName = "wte.weight"

    /// A dense embedding.
    public init(vocab: Int, channels: Int) {
        self.vocab = vocab
        self.channels = channels
        components = [DenseComponent(weightName: Self.denseName, inFeatures: vocab, outFeatures: channels)]
    }

    /// Names and shapes of the embedding's parameters.
    public var parameters: [(name: String, shape: [Int])] { components.flatMap(\.parameters) }

    /// dst [n, C] = the embedding rows of `ids` (a batched lookup: factored forms build their
    /// factors once per call).
    public func gather(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                       scratch: UnsafeMutablePointer<Float>) {
        dst.update(repeating: 0, count: ids.count * channels)
        for c in components { c.gatherRows(ids, into: dst, params: params, scratch: scratch) }
    }

    /// Accumulates the gradient of the lookups `ids` whose gradients are d [n, C].
    public func gatherBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                               scratch: UnsafeMutablePointer<Float>) {
        for c in components { c.gatherRowsBackward(ids, d, params: params, scratch: scratch) }
    }

    /// Output head: logits [N, V] = h [N, C] · Wᵀ.
    public func headForward(h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, params: ParameterSet,
                            scratch: UnsafeMutablePointer<Float>) {
        for (k, c) in components.enumerated() {
            c.multiplyTransposed(h, N: N, into: logits, accumulate: k > 0, params: params, scratch: scratch)
        }
    }

    /// Head backward: accumulates dW (+= dlogitsᵀ · h) and writes dh [N, C] = dlogits · W. (For
    /// the component, the head is a linear layer run backwards: x = dlogits, dY = h; `saved`
    /// holds `savedFloats(rows: N)` floats for the component between its two passes.)
    public func headBackward(h: UnsafePointer<Float>, dlogits: UnsafePointer<Float>, dh: UnsafeMutablePointer<Float>, N: Int,
                             params: ParameterSet, saved: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        dh.update(repeating: 0, count: N * channels)
        for c in components {
            let buffers = ComponentBuffers(saved: saved, scratch: scratch)
            c.forward(x: dlogits, N: N, out: dh, params: params, buffers: buffers)
            c.backward(x: dlogits, dout: h, dx: nil, accumulate: false, N: N, params: params, buffers: buffers)
        }
    }

    /// Floats the head's backward keeps per chunk of N rows (the largest component's).
    public func headSavedFloats(rows N: Int) -> Int { components.map { $0.savedFloats(rows: N) }.max() ?? 0 }
}
