import Kernels
import Tensor

/// The token embedding `wte [V, C]`, shared with the output head (tied, as in GPT-2).
/// Dense (optionally masked) or low rank `wte = E0 · E1ᵀ` with `E0 [V, r]`, `E1 [C, r]`.
public final class TokenEmbedding {
    public let vocab: Int
    public let channels: Int
    /// nil: dense `wte.weight`; otherwise the rank of `wte.w0 · wte.w1ᵀ`.
    public var rank: Int?
    /// Frozen pruning mask of a pruned dense embedding.
    public var bits: BitMask?
    /// The mask as 0/1 floats.
    public var mask: [Float]? {
        get { bits?.floats }
        set { bits = newValue.map(BitMask.init) }
    }
    private var headHidden: [Float] = []   // h · E1 [N, r] (low rank) saved for backward

    public init(vocab: Int, channels: Int, rank: Int? = nil, mask: [Float]? = nil) {
        self.vocab = vocab
        self.channels = channels
        self.rank = rank
        self.bits = mask.map(BitMask.init)
    }

    public static let denseName = "wte.weight"
    public static let w0Name = "wte.w0"
    public static let w1Name = "wte.w1"

    /// Names and shapes of the embedding's parameters.
    public var parameters: [(name: String, shape: [Int])] {
        rank.map { r in [(Self.w0Name, [vocab, r]), (Self.w1Name, [channels, r])] } ?? [(Self.denseName, [vocab, channels])]
    }

    /// A one-word description for tables and config.json.
    public var form: String { rank != nil ? "lowrank" : (bits != nil ? "sparse" : "dense") }

    /// Writes token `id`'s embedding row into `dst [C]`.
    @inline(__always)
    public func row(_ id: Int, into dst: UnsafeMutablePointer<Float>, params: ParameterSet) {
        let C = channels
        if let r = rank {
            // row = E0[id] [r] · E1ᵀ [r, C]
            let e0 = params.value(Self.w0Name) + id * r, e1 = params.value(Self.w1Name)
            for c in 0..<C {
                var s: Float = 0
                for k in 0..<r { s += e0[k] * e1[c * r + k] }
                dst[c] = s
            }
        } else {
            dst.update(from: params.value(Self.denseName) + id * C, count: C)
        }
    }

    /// Accumulates the gradient of a lookup: `d wte[id] += dx [C]`.
    public func rowBackward(_ id: Int, dx: UnsafePointer<Float>, params: ParameterSet) {
        let C = channels
        if let r = rank {
            let e0 = params.value(Self.w0Name) + id * r, e1 = params.value(Self.w1Name)
            let g0 = params.grad(Self.w0Name) + id * r, g1 = params.grad(Self.w1Name)
            for c in 0..<C {
                let d = dx[c]
                for k in 0..<r {
                    g0[k] += d * e1[c * r + k]
                    g1[c * r + k] += d * e0[k]
                }
            }
        } else {
            let g = params.grad(Self.denseName) + id * C
            for c in 0..<C { g[c] += dx[c] }
        }
    }

    /// Output head: logits [N, V] = h [N, C] · wteᵀ.
    public func headForward(h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, params: ParameterSet) {
        if let r = rank {
            if headHidden.count < N * r { headHidden = [Float](repeating: 0, count: N * r) }
            headHidden.withUnsafeMutableBufferPointer { u in
                sgemm(m: N, n: r, k: channels, a: h, b: params.value(Self.w1Name), c: u.baseAddress!)
                sgemm(transB: true, m: N, n: vocab, k: r, a: u.baseAddress!, b: params.value(Self.w0Name), c: logits)
            }
        } else {
            sgemm(transB: true, m: N, n: vocab, k: channels, a: h, b: params.value(Self.denseName), c: logits)
        }
    }

    /// Head backward: accumulates d wte and writes dh [N, C] from dlogits [N, V].
    public func headBackward(h: UnsafePointer<Float>, dlogits: UnsafePointer<Float>, dh: UnsafeMutablePointer<Float>, N: Int, params: ParameterSet) {
        if let r = rank {
            var du = [Float](repeating: 0, count: N * r)
            headHidden.withUnsafeBufferPointer { u in
                du.withUnsafeMutableBufferPointer { d in
                    // dE0 [V, r] += dlogitsᵀ · u;  du [N, r] = dlogits · E0
                    sgemm(transA: true, m: vocab, n: r, k: N, a: dlogits, b: u.baseAddress!, beta: 1, c: params.grad(Self.w0Name))
                    sgemm(m: N, n: r, k: vocab, a: dlogits, b: params.value(Self.w0Name), c: d.baseAddress!)
                    // dE1 [C, r] += hᵀ · du;  dh [N, C] = du · E1ᵀ
                    sgemm(transA: true, m: channels, n: r, k: N, a: h, b: d.baseAddress!, beta: 1, c: params.grad(Self.w1Name))
                    sgemm(transB: true, m: N, n: channels, k: r, a: d.baseAddress!, b: params.value(Self.w1Name), c: dh)
                }
            }
        } else {
            // d wte [V, C] += dlogitsᵀ [V, N] · h [N, C];  dh [N, C] = dlogits · wte
            sgemm(transA: true, m: vocab, n: channels, k: N, a: dlogits, b: h, beta: 1, c: params.grad(Self.denseName))
            sgemm(m: N, n: channels, k: vocab, a: dlogits, b: params.value(Self.denseName), c: dh)
        }
    }

    /// The dense `[V, C]` embedding.
    public func denseWeight(params: ParameterSet) -> Tensor {
        if rank != nil {
            return try! params.tensor(Self.w0Name).matmul(params.tensor(Self.w1Name), transposeOther: true)
        }
        return params.tensor(Self.denseName)
    }

    public func applyMask(params: ParameterSet) {
        guard rank == nil else { return }
        bits?.apply(to: params.value(Self.denseName))
    }

    public func maskGradient(params: ParameterSet) {
        guard rank == nil else { return }
        bits?.apply(to: params.grad(Self.denseName))
    }

    public func counts() -> (stored: Int, nonZero: Int) {
        if let r = rank { return ((vocab + channels) * r, (vocab + channels) * r) }
        if let bits { return (bits.kept, bits.kept) }
        return (vocab * channels, vocab * channels)
    }
}
