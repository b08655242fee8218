import Kernels
import Foundation
import Tensor

/// One transformer block's layers (pre-LayerNorm GPT-2): LN1 -> attention -> residual,
/// LN2 -> MLP (c_fc, GELU, c_proj) -> residual.
public final class Block {
    public let index: Int
    public let cAttn: Linear, attnProj: Linear, cFc: Linear, mlpProj: Linear
    public var prefix: String { "h.\(index)" }
    public var ln1: (w: String, b: String) { ("\(prefix).ln_1.weight", "\(prefix).ln_1.bias") }
    public var ln2: (w: String, b: String) { ("\(prefix).ln_2.weight", "\(prefix).ln_2.bias") }

    init(index: Int, config c: GPT2Config) {
        self.index = index
        func dense(_ name: String, _ i: Int, _ o: Int) -> Linear {
            Linear(name: name, inFeatures: i, outFeatures: o,
                   components: [DenseComponent(weightName: name + ".weight", inFeatures: i, outFeatures: o)])
        }
        cAttn = dense("h.\(index).attn.c_attn", c.nEmbd, 3 * c.nEmbd)
        attnProj = dense("h.\(index).attn.c_proj", c.nEmbd, c.nEmbd)
        cFc = dense("h.\(index).mlp.c_fc", c.nEmbd, c.nInner)
        mlpProj = dense("h.\(index).mlp.c_proj", c.nInner, c.nEmbd)
    }

    public var linears: [Linear] { [cAttn, attnProj, cFc, mlpProj] }
}

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

    /// A freshly initialised model (GPT-2's init: N(0, 0.02), positions N(0, 0.01), projections
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
            normal(b.cAttn.name + ".weight", std: 0.02)
            normal(b.attnProj.name + ".weight", std: projStd)
            normal(b.cFc.name + ".weight", std: 0.02)
            normal(b.mlpProj.name + ".weight", std: projStd)
        }
        ones("ln_f.weight")
    }

    /// Every parameter the layer forms need, with its shape and weight-decay flag, in a fixed
    /// order (embeddings, then block by block, then the final LayerNorm): the one table that
    /// parameter buffers, loading and shape checks follow.
    public static func layout(config: GPT2Config, embedding: TokenEmbedding, blocks: [Block]) -> [ParameterSet.Spec] {
        let C = config.nEmbd
        var specs: [ParameterSet.Spec] = embedding.parameters.map { ($0.name, $0.shape, true) }
        specs.append(("wpe.weight", [config.nPositions, C], true))
        for b in blocks {
            specs += [(b.ln1.w, [C], false), (b.ln1.b, [C], false)]
            for (k, lin) in b.linears.enumerated() {
                if k == 2 { specs += [(b.ln2.w, [C], false), (b.ln2.b, [C], false)] }
                for c in lin.components { specs += c.parameters.map { ($0.name, $0.shape, true) } }
                specs.append((lin.biasName, [lin.outFeatures], false))
            }
        }
        specs += [("ln_f.weight", [C], false), ("ln_f.bias", [C], false)]
        return specs
    }

    /// This model's layout (see `layout(config:embedding:blocks:)`).
    public func parameterLayout() -> [ParameterSet.Spec] { Self.layout(config: config, embedding: embedding, blocks: blocks) }

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
        applyMasks()
    }

    /// Every linear layer by HF prefix (`h.0.attn.c_attn`, ...), in model order.
    public var linears: [Linear] { blocks.flatMap { $0.linears } }

    /// The linear layer with this prefix.
    public func linear(_ name: String) -> Linear? { linears.first { $0.name == name } }

    /// Every layer whose weight compression can change: the embedding, then the block linears.
    public var weightedLayers: [WeightedLayer] { [embedding] + linears }

    /// The weighted layer called `name` ("wte" or a linear's prefix).
    public func layer(_ name: String) -> WeightedLayer? { name == embedding.name ? embedding : linear(name) }

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
    /// Recompute each block's activations in backward instead of keeping them (`--recompute`):
    /// memory for one block plus the block outputs, for about one more forward of compute.
    public var recompute = false
    /// The inference forward's workspace and the fused head's chunk buffers, reused while the
    /// shape fits (allocated once: no page faults per forward).
    var workspace: InferenceWorkspace?
    var headScratch: HeadScratch?

    /// Frees activation and workspace memory (e.g. a teacher or calibration model after use).
    public func releaseActivations() {
        training = nil
        workspace = nil
        headScratch = nil
    }

    /// The training activations for [B, T], allocated once per shape.
    func trainingActivations(B: Int, T: Int) -> TrainingActivations {
        let shape = ActivationShape(B: B, T: T, config: config)
        if let a = training, a.shape == shape, a.recompute == recompute { return a }
        training = nil
        let a = TrainingActivations(shape: shape, layers: config.nLayer, recompute: recompute)
        training = a
        return a
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

    /// Training forward on `ids [B, T]` (row-major) up to the final LayerNorm, keeping what
    /// backward needs. The loss (`crossEntropy`, or a distillation loss through `headLoss`) then
    /// runs the LM head chunk by chunk.
    public func forward(ids: [Int32], B: Int, T: Int) throws {
        try checkInput(ids, B: B, T: T)
        let a = trainingActivations(B: B, T: T)
        a.ids = ids
        let p = params, C = config.nEmbd, N = B * T
        embeddingForward(out: a.x0, ids: ids, B: B, T: T, C: C, wpe: p.value("wpe.weight")) { id, dst in
            embedding.row(id, into: dst, params: p)
        }
        for l in 0..<config.nLayer {
            blockForward(l, input: a.input(l), acts: a.block(l), output: a.outputs[l], fcg: a.fcg, shape: a.shape)
        }
        layerNormForward(out: a.lnf, mean: a.lnfMean, rstd: a.lnfRstd, inp: a.input(config.nLayer), weight: p.value("ln_f.weight"),
                         bias: p.value("ln_f.bias"), N: N, C: C, eps: config.layerNormEpsilon)
    }

    /// One block of the training forward: input [N, C] -> output [N, C], saving `acts`.
    func blockForward(_ l: Int, input: UnsafePointer<Float>, acts s: BlockActivations, output: UnsafeMutablePointer<Float>,
                      fcg: UnsafeMutablePointer<Float>, shape: ActivationShape) {
        let b = blocks[l], p = params, N = shape.N, C = shape.C, eps = config.layerNormEpsilon
        layerNormForward(out: s.ln1, mean: s.ln1Mean, rstd: s.ln1Rstd, inp: input, weight: p.value(b.ln1.w), bias: p.value(b.ln1.b),
                         N: N, C: C, eps: eps)
        b.cAttn.forward(x: s.ln1, N: N, out: s.qkv, params: p)
        attentionForward(out: s.atty, outStride: C, lse: s.lse, q: s.qkv, qStride: 3 * C, k: s.qkv + C, v: s.qkv + 2 * C,
                         kvStride: 3 * C, B: shape.B, Tq: shape.T, Tk: shape.T, offset: 0, NH: shape.NH, hs: C / shape.NH)
        b.attnProj.forward(x: s.atty, N: N, out: output, params: p)              // output holds the projection for now
        residualForward(out: s.res2, a: input, b: output, count: N * C)
        layerNormForward(out: s.ln2, mean: s.ln2Mean, rstd: s.ln2Rstd, inp: s.res2, weight: p.value(b.ln2.w), bias: p.value(b.ln2.b),
                         N: N, C: C, eps: eps)
        b.cFc.forward(x: s.ln2, N: N, out: s.fch, params: p)
        geluForward(out: fcg, inp: s.fch, count: N * shape.H)
        b.mlpProj.forward(x: fcg, N: N, out: output, params: p)
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
                blockForward(l, input: a.input(l), acts: a.block(l), output: a.dtmp, fcg: a.fcg, shape: s)
            }
            attentionLoss += blockBackward(l, input: a.input(l), acts: a.block(l), a: a, teacher: intermediate?.attention?(l))
            onLayerDone?(l)
        }
        // Embeddings: token rows (tied with the head) and positions.
        let dwpe = p.grad("wpe.weight")
        for i in 0..<N {
            let d = a.dres + i * C
            embedding.rowBackward(Int(a.ids[i]), dx: d, params: p)
            let g = dwpe + (i % s.T) * C
            for c in 0..<C { g[c] += d[c] }
        }
        return (hiddenLoss, attentionLoss)
    }

    /// One block's backward: `a.dres` holds d(block output) on entry and d(block input) on exit.
    func blockBackward(_ l: Int, input: UnsafePointer<Float>, acts s: BlockActivations, a: TrainingActivations,
                       teacher: AttentionTeacher?) -> Double {
        let b = blocks[l], p = params, sh = a.shape, N = sh.N, C = sh.C, H = sh.H
        // output = res2 + mlp(ln2(res2)): dres flows to res2 directly and through the MLP.
        geluForward(out: a.fcg, inp: s.fch, count: N * H)   // GELU's output, recomputed (cheap, not kept)
        b.mlpProj.backward(x: a.fcg, dout: a.dres, dx: a.dfc, N: N, params: p)
        geluBackward(dinp: a.dfc, inp: s.fch, dout: a.dfc, count: N * H)
        b.cFc.backward(x: s.ln2, dout: a.dfc, dx: a.dtmp, N: N, params: p)
        layerNormBackward(dinp: a.dres, dweight: p.grad(b.ln2.w), dbias: p.grad(b.ln2.b), dout: a.dtmp, inp: s.res2,
                          weight: p.value(b.ln2.w), mean: s.ln2Mean, rstd: s.ln2Rstd, N: N, C: C)
        // res2 = input + attn(ln1(input))
        b.attnProj.backward(x: s.atty, dout: a.dres, dx: a.dtmp, N: N, params: p)
        let kl = attentionBackward(dq: a.dqkv, dk: a.dqkv + C, dv: a.dqkv + 2 * C, dqkvStride: 3 * C, dout: a.dtmp, out: s.atty, outStride: C,
                                   lse: s.lse, q: s.qkv, k: s.qkv + C, v: s.qkv + 2 * C, qkvStride: 3 * C, B: sh.B, T: sh.T, NH: sh.NH,
                                   hs: C / sh.NH, teacher: teacher)
        b.cAttn.backward(x: s.ln1, dout: a.dqkv, dx: a.dtmp, N: N, params: p)
        layerNormBackward(dinp: a.dres, dweight: p.grad(b.ln1.w), dbias: p.grad(b.ln1.b), dout: a.dtmp, inp: input,
                          weight: p.value(b.ln1.w), mean: s.ln1Mean, rstd: s.ln1Rstd, N: N, C: C)
        return kl
    }
}

/// A model could not be built or run; names the tensor or the input problem.
public enum ModelError: Error, CustomStringConvertible {
    case missingTensor(String)
    case shape(String, expected: [Int], got: [Int])
    case input(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .missingTensor(let n): return "tensor '\(n)' is missing"
        case let .shape(n, e, g): return "tensor '\(n)' has shape \(g), expected \(e)"
        case .input(let s): return s
        case .unsupported(let s): return s
        }
    }
}
