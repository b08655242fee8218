import Kernels
import Tensor

/// What the inference forward needs of a model, whatever holds its weights: the trainable `GPT2`
/// (its components on its parameters) or the read-only `PackedGPT2` (each layer in its packed
/// form). The forward itself is written once, in the extension below.
public protocol InferenceNetwork: AnyObject {
    var config: GPT2Config { get }
    /// The buffers the forward reuses between calls (workspace, head chunks).
    var inferenceBuffers: InferenceBuffers { get }
    /// Scratch floats the layers need for N rows (lookups and the head included).
    func layerScratchFloats(rows N: Int) -> Int
    /// x [n, C] = the token embeddings of `ids` (no positions).
    func embedTokens(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)
    /// The position embedding [n_positions, C].
    var positionEmbedding: UnsafePointer<Float> { get }
    /// Block l's LayerNorm (`second`: ln_2, else ln_1), or for l == n_layer the final one.
    func layerNorm(block l: Int, second: Bool) -> (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)
    /// out [N, out] = x [N, in] · W + b for block l's linear `kind`.
    func linear(block l: Int, _ kind: BlockLinear, x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>,
                scratch: UnsafeMutablePointer<Float>)
    /// logits [N, V] = h [N, C] · wteᵀ (the tied head).
    func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)
}

/// The inference forward's reusable buffers: one layer's workspace and the head's chunk buffers,
/// kept while the shape fits (allocated once: no page faults per forward).
public final class InferenceBuffers {
    var workspace: InferenceWorkspace?
    var head: HeadScratch?
    public init() {}
    /// Frees them (a teacher or calibration model after use).
    public func release() { workspace = nil; head = nil }
}

/// The inputs each block linear sees, exposed to calibration (Wanda, SparseGPT, GPTQ) while a
/// block runs: LN1 output (c_attn), attention output (attn.c_proj), LN2 output (c_fc) and GELU
/// output (mlp.c_proj), each [N, in].
public struct BlockInputs {
    public let attn: UnsafePointer<Float>, attnProj: UnsafePointer<Float>, fc: UnsafePointer<Float>, fcProj: UnsafePointer<Float>
    /// The block's linears and their inputs, in block order.
    public func pairs(_ b: Block) -> [(linear: Linear, input: UnsafePointer<Float>)] {
        [(b.cAttn, attn), (b.attnProj, attnProj), (b.cFc, fc), (b.mlpProj, fcProj)]
    }
}

/// What a teacher keeps of an inference forward for intermediate-layer distillation, per
/// block: its output [N, C], and its queries and keys [N, 2C] with the attention log-sum-exp
/// [B, NH, T] (from which a block of attention probabilities is recomputed). A nil pointer
/// skips that block.
public struct ForwardCapture {
    public var output: (Int) -> UnsafeMutablePointer<Float>?
    public var queriesKeys: (Int) -> (qk: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)?
    public init(output: @escaping (Int) -> UnsafeMutablePointer<Float>?,
                queriesKeys: @escaping (Int) -> (qk: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)?) {
        self.output = output
        self.queriesKeys = queriesKeys
    }
}

/// The inference forward: evaluation, the teacher, calibration and generation. It keeps one
/// layer's workspace (nothing for backward); attention runs block by block; with a KV cache each
/// new token costs one row through the same code.
extension InferenceNetwork {
    /// The workspace for `rows` rows, allocated once and reused while it is large enough.
    public func inferenceWorkspace(rows: Int) -> InferenceWorkspace {
        if let w = inferenceBuffers.workspace, w.capacity >= rows { return w }
        inferenceBuffers.workspace = nil
        let w = InferenceWorkspace(rows: rows, config: config, scratchFloats: layerScratchFloats(rows: rows))
        inferenceBuffers.workspace = w
        return w
    }

    /// Checks a batch of ids [B, T] before any work.
    func checkInput(_ ids: [Int32], B: Int, T: Int, offset: Int = 0) throws {
        guard ids.count == B * T, B > 0, T > 0 else { throw ModelError.input("forward: \(ids.count) ids for B=\(B) x T=\(T)") }
        guard offset + T <= config.nPositions else {
            throw ModelError.input("forward: sequence length \(offset + T) exceeds n_positions \(config.nPositions)")
        }
        let V = config.vocabSize
        for id in ids where id < 0 || Int(id) >= V { throw ModelError.input("forward: token id \(id) outside the vocabulary 0..<\(V)") }
    }

    /// Frees the inference buffers.
    public func releaseInferenceBuffers() { inferenceBuffers.release() }

    /// Token + position embeddings of `ids [B, T]` (positions from `offset`) into `x [N, C]`.
    public func embed(ids: [Int32], B: Int, T: Int, offset: Int = 0, into x: UnsafeMutablePointer<Float>, workspace w: InferenceWorkspace) {
        ids.withUnsafeBufferPointer { embedTokens($0, into: x, scratch: w.scratch) }
        addPositionEmbeddings(out: x, B: B, T: T, C: config.nEmbd, wpe: positionEmbedding, positionOffset: offset)
    }

    /// Runs block l on the residual stream `x [B·T, C]` in place (inference: nothing kept).
    /// With a cache, the new keys and values are stored at positions offset ..< offset + T and
    /// attention sees every cached position (B must be 1).
    public func inferBlock(_ l: Int, x: UnsafeMutablePointer<Float>, B: Int, T: Int, workspace w: InferenceWorkspace,
                           cache: KVCache? = nil, offset: Int = 0, inputs: ((BlockInputs) throws -> Void)? = nil,
                           capture: ForwardCapture? = nil) throws {
        let N = B * T, C = config.nEmbd, NH = config.nHead, eps = config.layerNormEpsilon
        let ln1 = layerNorm(block: l, second: false), ln2 = layerNorm(block: l, second: true)
        precondition(N <= w.capacity, "inferBlock: \(N) rows exceed the workspace's \(w.capacity)")
        let mean = w.stats, rstd = w.stats + N
        layerNormForward(out: w.ln1, mean: mean, rstd: rstd, inp: x, weight: ln1.weight, bias: ln1.bias, N: N, C: C, eps: eps)
        linear(block: l, .attention, x: w.ln1, N: N, out: w.qkv, scratch: w.scratch)
        if let cache {
            precondition(B == 1 && offset + T <= cache.maxT, "inferBlock: the cache holds \(cache.maxT) positions for one sequence")
            cache.store(layer: l, keys: w.qkv + C, values: w.qkv + 2 * C, stride: 3 * C, rows: T, at: offset)
            if offset == 0 {   // a fresh prompt: its own F32 keys and values, as without a cache
                attentionForward(out: w.atty, outStride: C, lse: nil, q: w.qkv, qStride: 3 * C, k: w.qkv + C, v: w.qkv + 2 * C,
                                 kvStride: 3 * C, B: 1, Tq: T, Tk: T, offset: 0, NH: NH, hs: C / NH)
            } else {
                cache.attend(layer: l, q: w.qkv, qStride: 3 * C, rows: T, offset: offset, NH: NH, out: w.atty, outStride: C)
            }
        } else {
            let keep = capture?.queriesKeys(l)
            attentionForward(out: w.atty, outStride: C, lse: keep?.lse, q: w.qkv, qStride: 3 * C, k: w.qkv + C, v: w.qkv + 2 * C,
                             kvStride: 3 * C, B: B, Tq: T, Tk: T, offset: 0, NH: NH, hs: C / NH)
            if let qk = keep?.qk {
                for i in 0..<N { (qk + i * 2 * C).update(from: w.qkv + i * 3 * C, count: 2 * C) }
            }
        }
        linear(block: l, .attentionProjection, x: w.atty, N: N, out: w.proj, scratch: w.scratch)
        residualForward(out: x, a: x, b: w.proj, count: N * C)
        layerNormForward(out: w.ln2, mean: mean, rstd: rstd, inp: x, weight: ln2.weight, bias: ln2.bias, N: N, C: C, eps: eps)
        linear(block: l, .fc, x: w.ln2, N: N, out: w.fc, scratch: w.scratch)
        geluForward(out: w.fc, inp: w.fc, count: N * config.nInner)
        try inputs?(BlockInputs(attn: w.ln1, attnProj: w.atty, fc: w.ln2, fcProj: w.fc))
        linear(block: l, .fcProjection, x: w.fc, N: N, out: w.proj, scratch: w.scratch)
        residualForward(out: x, a: x, b: w.proj, count: N * C)
        if let out = capture?.output(l) { out.update(from: x, count: N * C) }
    }

    /// Final hidden states (LN_f output) of `ids [B, T]`: the LM head's input, [B·T, C], valid
    /// until the next inference call on this model. With a cache, positions continue from
    /// `cache.used` (B must be 1) and the cache advances.
    public func hiddenStates(ids: [Int32], B: Int, T: Int, cache: KVCache? = nil, capture: ForwardCapture? = nil) throws -> UnsafePointer<Float> {
        let offset = cache?.used ?? 0
        try checkInput(ids, B: B, T: T, offset: offset)
        if let cache, B != 1 || offset + T > cache.maxT { throw ModelError.input("hiddenStates: the KV cache holds one sequence of \(cache.maxT) positions") }
        let N = B * T, C = config.nEmbd
        let w = inferenceWorkspace(rows: N)
        embed(ids: ids, B: B, T: T, offset: offset, into: w.x, workspace: w)
        for l in 0..<config.nLayer { try inferBlock(l, x: w.x, B: B, T: T, workspace: w, cache: cache, offset: offset, capture: capture) }
        let lnf = layerNorm(block: config.nLayer, second: false)
        layerNormForward(out: w.ln1, mean: w.stats, rstd: w.stats + N, inp: w.x, weight: lnf.weight, bias: lnf.bias, N: N, C: C,
                         eps: config.layerNormEpsilon)
        cache?.used = offset + T
        return UnsafePointer(w.ln1)
    }

    /// Logits [B·T, V] of `ids [B, T]` as one array (tests, generation's last row, small inputs;
    /// evaluation and distillation use the chunked `headLoss` instead).
    public func logits(ids: [Int32], B: Int, T: Int, cache: KVCache? = nil, lastRowOnly: Bool = false) throws -> [Float] {
        let h = try hiddenStates(ids: ids, B: B, T: T, cache: cache)
        let rows = lastRowOnly ? 1 : B * T
        let start = lastRowOnly ? (B * T - 1) * config.nEmbd : 0
        var out = [Float](repeating: 0, count: rows * config.vocabSize)
        let buf = headBuffers(rows: rows, teacher: nil), C = config.nEmbd, V = config.vocabSize
        out.withUnsafeMutableBufferPointer { o in
            for r0 in stride(from: 0, to: rows, by: buf.rows) {
                head(h + start + r0 * C, N: min(buf.rows, rows - r0), logits: o.baseAddress! + r0 * V, scratch: buf.scratch)
            }
        }
        return out
    }

    /// Sum of the cross-entropy of the scored rows of `ids [B, T]` against `targets` (negative =
    /// not scored) and their count: the inference forward plus the fused, chunked head.
    public func negativeLogLikelihood(ids: [Int32], targets: [Int32], B: Int, T: Int) throws -> (sum: Double, scored: Int) {
        guard targets.count == B * T else { throw ModelError.input("negativeLogLikelihood: \(targets.count) targets for \(B * T) positions") }
        let h = try hiddenStates(ids: ids, B: B, T: T)
        let (_, ce) = targets.withUnsafeBufferPointer { tg in evaluationLoss(hidden: h, N: B * T, targets: tg.baseAddress!) }
        return (ce, targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) })
    }
}

extension GPT2: InferenceNetwork {
    public func layerScratchFloats(rows N: Int) -> Int { weightedLayers.map { $0.scratchFloats(rows: N) }.max() ?? 0 }

    public func embedTokens(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.gather(ids, into: x, params: params, scratch: scratch)
    }

    public var positionEmbedding: UnsafePointer<Float> { UnsafePointer(params.value("wpe.weight")) }

    public func layerNorm(block l: Int, second: Bool) -> (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>) {
        guard l < blocks.count else { return (UnsafePointer(params.value("ln_f.weight")), UnsafePointer(params.value("ln_f.bias"))) }
        let n = second ? blocks[l].ln2 : blocks[l].ln1
        return (UnsafePointer(params.value(n.w)), UnsafePointer(params.value(n.b)))
    }

    public func linear(block l: Int, _ kind: BlockLinear, x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>) {
        blocks[l].linear(kind).forward(x: x, N: N, out: out, params: params, scratch: scratch)
    }

    public func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.headForward(h: h, N: N, logits: logits, params: params, scratch: scratch)
    }
}
