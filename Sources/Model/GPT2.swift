import Kernels
import Foundation
import Tensor

/// A GPT-2 language model with explicit forward and backward passes over `[B, T]` token batches.
///
/// Parameters and gradients live in one flat `ParameterSet`; every linear layer is a `Linear`
/// whose weight may be dense, sparse, low rank or Kronecker. Two forwards share the layer
/// kernels: the training forward keeps typed activations for `backward` (GPT2.swift), the
/// inference forward keeps one layer's workspace (GPT2+Inference.swift); the LM head and its
/// loss run fused, chunk by chunk (GPT2+Head.swift).
public final class GPT2 {
    public let config: GPT2Config
    public private(set) var params: ParameterSet
    public let blocks: [Block]
    public let embedding: TokenEmbedding
    /// Directory the model was loaded from (tokenizer files are copied from it on save).
    public var sourceDirectory: URL?
    /// Key prefix of the source checkpoint ("transformer." or ""), kept on save.
    public var keyPrefix = "transformer."
    /// Float type of the source checkpoint, the default when saving.
    public var storageDType: SafeTensorsDType = .f32
    /// What earlier compression runs did (config.json `compression.history`).
    public var compressionHistory: [JSONValue] = []

    /// Builds a model from named tensors (HF names without the `transformer.` prefix).
    public init(config: GPT2Config, tensors: [String: Tensor], embedding: TokenEmbedding? = nil, blocks: [Block]? = nil) throws {
        self.config = config
        self.embedding = embedding ?? TokenEmbedding(vocab: config.vocabSize, channels: config.nEmbd)
        self.blocks = blocks ?? (0..<config.nLayer).map { Block(index: $0, config: config) }
        self.params = ParameterSet(layout: [])
        try rebuildParameters(from: tensors)
    }

    /// A model over a parameter set laid out by `layout(config:embedding:blocks:)` (loading
    /// fills it in place; a teacher's may live in node-shared memory).
    public init(config: GPT2Config, embedding: TokenEmbedding, blocks: [Block], params: ParameterSet) {
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
        self.params = params
    }

    /// A freshly initialized model (GPT-2's init: N(0, 0.02), positions N(0, 0.01), projections
    /// scaled by 1/sqrt(2 L), LayerNorm gains 1, biases 0), drawn straight into the parameter
    /// buffer, one seed per tensor.
    public convenience init(config: GPT2Config, seed: UInt64) throws {
        let embedding = TokenEmbedding(vocab: config.vocabSize, channels: config.nEmbd)
        let blocks = (0..<config.nLayer).map { Block(index: $0, config: config) }
        let params = ParameterSet(layout: GPT2.layout(config: config, embedding: embedding, blocks: blocks))
        self.init(config: config, embedding: embedding, blocks: blocks, params: params)
        var s = seed
        func normal(_ name: String, std: Float) { s &+= 1; fillNormal(params.value(name), count: params.slot(name).count, std: std, seed: s) }
        func ones(_ name: String) { params.value(name).update(repeating: 1, count: params.slot(name).count) }
        let projStd = 0.02 / Float(2 * config.nLayer).squareRoot()
        normal(TokenEmbedding.denseName, std: 0.02)
        normal("wpe.weight", std: 0.01)
        for b in blocks {
            ones(b.ln1.w); ones(b.ln2.w)
            for (lin, kind) in zip(b.linears, BlockLinear.allCases) {
                normal(lin.name + ".weight", std: kind == .attentionProjection || kind == .fcProjection ? projStd : 0.02)
            }
        }
        ones("ln_f.weight")
    }

    /// The model's layer forms (no parameters).
    public var forms: GPT2Forms { GPT2Forms(config: config, embedding: embedding, blocks: blocks) }

    /// The parameter layout of `forms` (see `GPT2Forms.parameterLayout`).
    public static func layout(config: GPT2Config, embedding: TokenEmbedding, blocks: [Block]) -> [ParameterSet.Spec] {
        GPT2Forms(config: config, embedding: embedding, blocks: blocks).parameterLayout
    }

    /// This model's layout.
    public func parameterLayout() -> [ParameterSet.Spec] { forms.parameterLayout }

    /// Lays out a new parameter buffer for the current layer forms, taking values from `tensors`
    /// and, for names not given, from the current parameters. Gradients start at zero.
    public func rebuildParameters(from tensors: [String: Tensor]) throws {
        let layout = parameterLayout()
        for (name, shape, _) in layout {
            if let t = tensors[name] {
                guard t.shape == shape else { throw ModelError.shape(name, expected: shape, got: t.shape) }
            } else if !params.contains(name) {
                throw ModelError.missingTensor(name)
            } else if params.slot(name).shape != shape {
                throw ModelError.shape(name, expected: shape, got: params.slot(name).shape)
            }
        }
        let fresh = ParameterSet(layout: layout)
        for s in fresh.slots {
            let dst = fresh.values.baseAddress! + s.offset
            if let t = tensors[s.name] {
                t.data.withUnsafeBufferPointer { dst.update(from: $0.baseAddress!, count: s.count) }
            } else {
                dst.update(from: params.value(s.name), count: s.count)
            }
        }
        params = fresh
        // The layer forms changed: buffers sized by them are allocated again when next needed.
        releaseActivations()
        applyMasks()
    }

    /// Every linear layer by HF prefix (`h.0.attn.c_attn`, ...), in model order.
    public var linears: [Linear] { blocks.flatMap { $0.linears } }

    /// The linear layer with this prefix.
    public func linear(_ name: String) -> Linear? {
        BlockLinear.parse(name, layers: blocks.count).map { blocks[$0.block].linear($0.linear) }
    }

    /// Every layer whose weight compression can change: the embedding, then the block linears.
    public var weightedLayers: [WeightedLayer] { [embedding] + linears }

    /// The weighted layer called `name` ("wte" or a linear's prefix).
    public func layer(_ name: String) -> WeightedLayer? { forms.layer(name) }

    /// Re-applies every frozen pruning mask to the weights.
    public func applyMasks() {
        for l in weightedLayers { l.applyMasks(params: params) }
    }

    /// Zeroes the gradients of pruned weights.
    public func maskGradients() {
        for l in weightedLayers { l.maskGradients(params: params) }
    }

    // MARK: - Training forward

    /// Activations of the last training forward (nil after `releaseActivations`).
    var training: TrainingActivations?
    /// The inference forward's workspace and the fused head's chunk buffers, reused while the
    /// shape fits (allocated once: no page faults per forward).
    public let inferenceBuffers = InferenceBuffers()

    /// Frees activation and workspace memory (e.g. a teacher or calibration model after use).
    public func releaseActivations() {
        training = nil
        inferenceBuffers.release()
    }

    /// The training activations for [B, T], allocated once per shape.
    func trainingActivations(B: Int, T: Int, recompute: Bool) -> TrainingActivations {
        let shape = ActivationShape(B: B, T: T, config: config)
        if let a = training, a.shape == shape, a.recompute == recompute { return a }
        training = nil
        let a = TrainingActivations(shape: shape, blocks: blocks, embedding: embedding, recompute: recompute)
        training = a
        return a
    }

    /// Training forward on `ids [B, T]` (row-major) up to the final LayerNorm, keeping what
    /// backward needs. The loss (`crossEntropy`, or a distillation loss through `headLoss`) then
    /// runs the LM head chunk by chunk. With `recompute` (`--recompute`), each block's activations
    /// are recomputed in backward instead of kept: memory for one block plus the block outputs, for
    /// about one more forward of compute.
    public func forward(ids: [Int32], B: Int, T: Int, recompute: Bool = false) throws {
        try checkInput(ids, B: B, T: T)
        let a = trainingActivations(B: B, T: T, recompute: recompute)
        a.ids = ids
        let p = params, C = config.nEmbd, N = B * T
        ids.withUnsafeBufferPointer { embedding.gather($0, into: a.x0, params: p, scratch: a.scratch) }
        addPositionEmbeddings(out: a.x0, B: B, T: T, C: C, wpe: p.value("wpe.weight"))
        for l in 0..<config.nLayer {
            blockForward(l, input: a.input(l), acts: a.block(l), output: a.outputs[l], a: a)
        }
        layerNormForward(out: a.lnf, mean: a.lnfMean, rstd: a.lnfRstd, inp: a.input(config.nLayer), weight: p.value("ln_f.weight"),
                         bias: p.value("ln_f.bias"), N: N, C: C, eps: config.layerNormEpsilon)
    }

    /// One block of the training forward: input [N, C] -> output [N, C], saving `acts`.
    func blockForward(_ l: Int, input: UnsafePointer<Float>, acts s: BlockActivations, output: UnsafeMutablePointer<Float>,
                      a: TrainingActivations) {
        let b = blocks[l], p = params, shape = a.shape, N = shape.N, C = shape.C, eps = config.layerNormEpsilon, fcg = a.fcg
        func forward(_ k: Int, _ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>) {
            b.linears[k].forward(x: x, N: N, out: out, params: p, saved: s.saved[k], scratch: a.scratch)
        }
        layerNormForward(out: s.ln1, mean: s.ln1Mean, rstd: s.ln1Rstd, inp: input, weight: p.value(b.ln1.w), bias: p.value(b.ln1.b),
                         N: N, C: C, eps: eps)
        forward(0, s.ln1, s.qkv)
        attentionForward(out: s.atty, outStride: C, lse: s.lse, q: s.qkv, qStride: 3 * C, k: s.qkv + C, v: s.qkv + 2 * C,
                         kvStride: 3 * C, B: shape.B, Tq: shape.T, Tk: shape.T, offset: 0, NH: shape.NH, hs: C / shape.NH)
        forward(1, s.atty, output)              // output holds the projection for now
        residualForward(out: s.res2, a: input, b: output, count: N * C)
        layerNormForward(out: s.ln2, mean: s.ln2Mean, rstd: s.ln2Rstd, inp: s.res2, weight: p.value(b.ln2.w), bias: p.value(b.ln2.b),
                         N: N, C: C, eps: eps)
        forward(2, s.ln2, s.fch)
        geluForward(out: fcg, inp: s.fch, count: N * shape.H)
        forward(3, fcg, output)
        residualForward(out: output, a: s.res2, b: output, count: N * C)
    }

    /// Mean cross-entropy of the last training forward against `targets [B, T]` (negative =
    /// ignored), with the LM head fused and chunked over rows. With `computeGradient`, the head's
    /// weight gradient is accumulated and the hidden-state gradient is ready for `backward`
    /// (zero the gradients before the forward). Also returns each row's loss.
    public func crossEntropy(targets: [Int32], computeGradient: Bool) throws -> (loss: Double, losses: [Float]) {
        guard let a = training else { throw ModelError.input("crossEntropy: call forward first") }
        let N = a.shape.N
        guard targets.count == N else { throw ModelError.input("crossEntropy: \(targets.count) targets for \(N) positions") }
        let scored = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        var losses = [Float](repeating: 0, count: N)
        let (_, ce) = losses.withUnsafeMutableBufferPointer { lp in
            headLoss(hidden: a.lnf, N: N, targets: targets, teacher: nil, temperature: 1, alpha: 0, scale: 1 / Float(max(scored, 1)),
                     dHidden: computeGradient ? a.dlnf : nil, rowLosses: lp.baseAddress!)
        }
        return (ce / Double(max(scored, 1)), losses)
    }

    /// The final hidden states [N, C] (LN_f output) of the last training forward: the LM head's
    /// input, and the gradient buffer the loss fills for `backward`.
    public var trainingHidden: (hidden: UnsafePointer<Float>, gradient: UnsafeMutablePointer<Float>)? {
        training.map { (UnsafePointer($0.lnf), $0.dlnf) }
    }

    // MARK: - Intermediate-layer terms

    /// The intermediate-layer terms of a distillation for the next `backward`: for block l, a
    /// function adding the hidden-state term's gradient to d(block output) and returning its
    /// loss sum, and the teacher's attention to match.
    public struct IntermediateTargets {
        public var hidden: ((_ block: Int, _ output: UnsafePointer<Float>, _ gradient: UnsafeMutablePointer<Float>) -> Double)?
        public var attention: ((_ block: Int) -> AttentionTeacher?)?
        public init(hidden: ((Int, UnsafePointer<Float>, UnsafeMutablePointer<Float>) -> Double)? = nil,
                    attention: ((Int) -> AttentionTeacher?)? = nil) {
            self.hidden = hidden
            self.attention = attention
        }
    }

    // MARK: - Backward

    /// Backpropagates the hidden-state gradient the loss left (see `crossEntropy` / `headLoss`)
    /// through the last forward, accumulating into `params.grads`. `onLayerDone(l)` fires when
    /// block l's gradients are final (for overlapping their reduction with the rest).
    /// With `intermediate`, also adds the intermediate-layer terms' gradients and returns their
    /// loss sums (hidden, attention), else (0, 0).
    @discardableResult
    public func backward(onLayerDone: ((Int) -> Void)? = nil, intermediate: IntermediateTargets? = nil) throws -> (hidden: Double, attention: Double) {
        guard let a = training else { throw ModelError.input("backward: call forward first") }
        var hiddenLoss = 0.0, attentionLoss = 0.0
        let s = a.shape, N = s.N, C = s.C, L = config.nLayer, p = params

        // Final LayerNorm: dres = d(last block output).
        a.dres.update(repeating: 0, count: N * C)
        layerNormBackward(dinp: a.dres, dweight: p.grad("ln_f.weight"), dbias: p.grad("ln_f.bias"), dout: a.dlnf, inp: a.input(L),
                          weight: p.value("ln_f.weight"), mean: a.lnfMean, rstd: a.lnfRstd, N: N, C: C)
        for l in stride(from: L - 1, through: 0, by: -1) {
            if let h = intermediate?.hidden { hiddenLoss += h(l, a.outputs[l], a.dres) }
            if a.recompute {
                // The block's activations were not kept: run its forward again from its saved input.
                blockForward(l, input: a.input(l), acts: a.block(l), output: a.dtmp, a: a)
            }
            attentionLoss += blockBackward(l, input: a.input(l), acts: a.block(l), a: a, teacher: intermediate?.attention?(l))
            onLayerDone?(l)
        }
        // Embeddings: token rows (tied with the head) and positions.
        a.ids.withUnsafeBufferPointer { embedding.gatherBackward($0, a.dres, params: p, scratch: a.scratch) }
        addPositionEmbeddingGradients(dwpe: p.grad("wpe.weight"), dout: a.dres, B: s.B, T: s.T, C: C)
        return (hiddenLoss, attentionLoss)
    }

    /// One block's backward: `a.dres` holds d(block output) on entry and d(block input) on exit.
    func blockBackward(_ l: Int, input: UnsafePointer<Float>, acts s: BlockActivations, a: TrainingActivations,
                       teacher: AttentionTeacher?) -> Double {
        let b = blocks[l], p = params, sh = a.shape, N = sh.N, C = sh.C, H = sh.H
        func backward(_ k: Int, _ x: UnsafePointer<Float>, _ dout: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>) {
            b.linears[k].backward(x: x, dout: dout, dx: dx, N: N, params: p, saved: s.saved[k], scratch: a.scratch)
        }
        // output = res2 + mlp(ln2(res2)): dres flows to res2 directly and through the MLP.
        geluForward(out: a.fcg, inp: s.fch, count: N * H)   // GELU's output, recomputed (cheap, not kept)
        backward(3, a.fcg, a.dres, a.dfc)
        geluBackward(dinp: a.dfc, inp: s.fch, dout: a.dfc, count: N * H)
        backward(2, s.ln2, a.dfc, a.dtmp)
        layerNormBackward(dinp: a.dres, dweight: p.grad(b.ln2.w), dbias: p.grad(b.ln2.b), dout: a.dtmp, inp: s.res2,
                          weight: p.value(b.ln2.w), mean: s.ln2Mean, rstd: s.ln2Rstd, N: N, C: C)
        // res2 = input + attn(ln1(input))
        backward(1, s.atty, a.dres, a.dtmp)
        let kl = attentionBackward(dq: a.dqkv, dk: a.dqkv + C, dv: a.dqkv + 2 * C, dqkvStride: 3 * C, dout: a.dtmp, out: s.atty, outStride: C,
                                   lse: s.lse, q: s.qkv, k: s.qkv + C, v: s.qkv + 2 * C, qkvStride: 3 * C, B: sh.B, T: sh.T, NH: sh.NH,
                                   hs: C / sh.NH, teacher: teacher)
        backward(0, s.ln1, a.dqkv, a.dtmp)
        layerNormBackward(dinp: a.dres, dweight: p.grad(b.ln1.w), dbias: p.grad(b.ln1.b), dout: a.dtmp, inp: input,
                          weight: p.value(b.ln1.w), mean: s.ln1Mean, rstd: s.ln1Rstd, N: N, C: C)
        return kl
    }
}

