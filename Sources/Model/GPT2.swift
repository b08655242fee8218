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
/// whose weight may be dense, sparse, low rank or Kronecker. Activations are kept from the last
/// `forward` for `backward`.
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
        self.params = ParameterSet([])
        try rebuildParameters(from: tensors)
    }

    /// A freshly initialised model (GPT-2's init: N(0, 0.02), projections scaled by 1/sqrt(2 L)).
    public convenience init(config: GPT2Config, seed: UInt64) throws {
        var tensors: [String: Tensor] = [:]
        var s = seed
        func normal(_ shape: [Int], std: Float) -> Tensor { s &+= 1; return Tensor.randomNormal(shape: shape, std: std, seed: s) }
        let C = config.nEmbd
        tensors["wte.weight"] = normal([config.vocabSize, C], std: 0.02)
        tensors["wpe.weight"] = normal([config.nPositions, C], std: 0.01)
        let projStd = 0.02 / Float(2 * config.nLayer).squareRoot()
        for l in 0..<config.nLayer {
            let p = "h.\(l)"
            for ln in ["ln_1", "ln_2"] {
                tensors["\(p).\(ln).weight"] = Tensor(shape: [C], repeating: 1)
                tensors["\(p).\(ln).bias"] = Tensor(shape: [C])
            }
            tensors["\(p).attn.c_attn.weight"] = normal([C, 3 * C], std: 0.02)
            tensors["\(p).attn.c_attn.bias"] = Tensor(shape: [3 * C])
            tensors["\(p).attn.c_proj.weight"] = normal([C, C], std: projStd)
            tensors["\(p).attn.c_proj.bias"] = Tensor(shape: [C])
            tensors["\(p).mlp.c_fc.weight"] = normal([C, config.nInner], std: 0.02)
            tensors["\(p).mlp.c_fc.bias"] = Tensor(shape: [config.nInner])
            tensors["\(p).mlp.c_proj.weight"] = normal([config.nInner, C], std: projStd)
            tensors["\(p).mlp.c_proj.bias"] = Tensor(shape: [C])
        }
        tensors["ln_f.weight"] = Tensor(shape: [C], repeating: 1)
        tensors["ln_f.bias"] = Tensor(shape: [C])
        try self.init(config: config, tensors: tensors)
    }

    /// Every parameter name the current layer forms need and its weight-decay flag, in a fixed
    /// order (embeddings, then block by block, then the final LayerNorm).
    public func parameterLayout() -> [(name: String, decay: Bool)] {
        var names: [(String, Bool)] = embedding.parameterNames.map { ($0, true) }
        names.append(("wpe.weight", true))
        for b in blocks {
            names.append((b.ln1.w, false)); names.append((b.ln1.b, false))
            for (k, lin) in b.linears.enumerated() {
                if k == 2 { names.append((b.ln2.w, false)); names.append((b.ln2.b, false)) }
                for c in lin.components { names += c.parameterNames.map { ($0, true) } }
                names.append((lin.biasName, false))
            }
        }
        names.append(("ln_f.weight", false)); names.append(("ln_f.bias", false))
        return names
    }

    /// Lays out a new parameter buffer for the current layer forms, taking values from `tensors`
    /// and, for names not given, from the current parameters. Gradients start at zero.
    public func rebuildParameters(from tensors: [String: Tensor]) throws {
        let layout = parameterLayout()
        var list: [(name: String, tensor: Tensor, decay: Bool)] = []
        for (name, decay) in layout {
            if let t = tensors[name] {
                list.append((name, t, decay))
            } else if params.contains(name) {
                list.append((name, params.tensor(name), decay))
            } else {
                throw ModelError.missingTensor(name)
            }
        }
        try checkShapes(list)
        params = ParameterSet(list)
        applyMasks()
    }

    private func checkShapes(_ list: [(name: String, tensor: Tensor, decay: Bool)]) throws {
        let expected = Dictionary(uniqueKeysWithValues: expectedShapes(config: config, embedding: embedding, blocks: blocks))
        for item in list {
            if let e = expected[item.name], e != item.tensor.shape {
                throw ModelError.shape(item.name, expected: e, got: item.tensor.shape)
            }
        }
    }

    /// Every linear layer by HF prefix (`h.0.attn.c_attn`, ...), in model order.
    public var linears: [Linear] { blocks.flatMap { $0.linears } }

    /// The linear layer with this prefix.
    public func linear(_ name: String) -> Linear? { linears.first { $0.name == name } }

    /// Re-applies every frozen pruning mask to the weights.
    public func applyMasks() {
        embedding.applyMask(params: params)
        for l in linears { l.applyMasks(params: params) }
    }

    /// Zeroes the gradients of pruned weights.
    public func maskGradients() {
        embedding.maskGradient(params: params)
        for l in linears { l.maskGradients(params: params) }
    }

    // MARK: - Activations

    /// Buffers of one forward pass at a given [B, T], reused while the shape stays the same.
    final class Activations {
        let B: Int, T: Int
        var buffers: [String: UnsafeMutableBufferPointer<Float>] = [:]
        init(B: Int, T: Int) { self.B = B; self.T = T }
        func get(_ key: String, _ count: Int) -> UnsafeMutablePointer<Float> {
            if let b = buffers[key], b.count >= count { return b.baseAddress! }
            buffers[key]?.deallocate()
            let b = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(count, 1))
            b.initialize(repeating: 0)
            buffers[key] = b
            return b.baseAddress!
        }
        deinit { for (_, b) in buffers { b.deallocate() } }
    }

    var acts: Activations?
    private var lastIDs: [Int32] = []

    func activations(B: Int, T: Int) -> Activations {
        if let a = acts, a.B == B, a.T == T { return a }
        let a = Activations(B: B, T: T)
        acts = a
        return a
    }

    /// The inputs `[N, in]` each linear layer of block `l` saw in the last forward pass
    /// (N = B·T): LN1 output for c_attn, attention output for attn.c_proj, LN2 output for
    /// c_fc, GELU output for mlp.c_proj.
    public func linearInputs(block l: Int) -> [(linear: Linear, input: UnsafePointer<Float>, rows: Int)] {
        guard let a = acts else { return [] }
        let N = a.B * a.T, C = config.nEmbd, H = config.nInner
        let b = blocks[l]
        return [(b.cAttn, UnsafePointer(a.get("ln1.\(l)", N * C)), N), (b.attnProj, UnsafePointer(a.get("atty.\(l)", N * C)), N),
                (b.cFc, UnsafePointer(a.get("ln2.\(l)", N * C)), N), (b.mlpProj, UnsafePointer(a.get("fcg.\(l)", N * H)), N)]
    }

    /// Frees activation memory (e.g. a teacher after use).
    public func releaseActivations() { acts = nil }

    // MARK: - Forward

    /// Runs the model on `ids [B, T]` (row-major) and returns logits `[B, T, V]`, valid until the
    /// next forward. Keeps the activations for `backward`.
    @discardableResult
    public func forward(ids: [Int32], B: Int, T: Int) throws -> UnsafeMutableBufferPointer<Float> {
        try forward(ids: ids, B: B, T: T, stopAfterBlock: nil)!
    }

    /// Forward pass that can stop after block `stopAfterBlock` (for calibration: later blocks
    /// and the head are skipped and nil is returned).
    public func forward(ids: [Int32], B: Int, T: Int, stopAfterBlock: Int?) throws -> UnsafeMutableBufferPointer<Float>? {
        let C = config.nEmbd, V = config.vocabSize, NH = config.nHead, L = config.nLayer, H = config.nInner
        guard ids.count == B * T else { throw ModelError.input("forward: \(ids.count) ids for B=\(B) x T=\(T)") }
        guard T <= config.nPositions else { throw ModelError.input("forward: sequence length \(T) exceeds n_positions \(config.nPositions)") }
        for id in ids where id < 0 || Int(id) >= V { throw ModelError.input("forward: token id \(id) outside the vocabulary 0..<\(V)") }
        let N = B * T
        let a = activations(B: B, T: T)
        lastIDs = ids
        let p = params

        // Embeddings -> residual stream x0 [N, C]
        let x0 = a.get("x0", N * C)
        embeddingForward(out: x0, ids: ids, B: B, T: T, C: C, wpe: p.value("wpe.weight")) { id, dst in
            embedding.row(id, into: dst, params: p)
        }
        var residual = UnsafePointer(x0)
        for l in 0..<L {
            let b = blocks[l]
            let ln1 = a.get("ln1.\(l)", N * C), ln1m = a.get("ln1m.\(l)", N), ln1r = a.get("ln1r.\(l)", N)
            let qkv = a.get("qkv.\(l)", N * 3 * C), att = a.get("att.\(l)", B * NH * T * T)
            let atty = a.get("atty.\(l)", N * C), attproj = a.get("attproj.\(l)", N * C), res2 = a.get("res2.\(l)", N * C)
            let ln2 = a.get("ln2.\(l)", N * C), ln2m = a.get("ln2m.\(l)", N), ln2r = a.get("ln2r.\(l)", N)
            let fch = a.get("fch.\(l)", N * H), fcg = a.get("fcg.\(l)", N * H)
            let fcproj = a.get("fcproj.\(l)", N * C), res3 = a.get("res3.\(l)", N * C)

            layerNormForward(out: ln1, mean: ln1m, rstd: ln1r, inp: residual, weight: p.value(b.ln1.w), bias: p.value(b.ln1.b),
                             N: N, C: C, eps: config.layerNormEpsilon)
            b.cAttn.forward(x: ln1, N: N, out: qkv, params: p)
            attentionForward(out: atty, att: att, qkv: qkv, B: B, T: T, C: C, NH: NH)
            b.attnProj.forward(x: atty, N: N, out: attproj, params: p)
            residualForward(out: res2, a: residual, b: attproj, count: N * C)
            layerNormForward(out: ln2, mean: ln2m, rstd: ln2r, inp: res2, weight: p.value(b.ln2.w), bias: p.value(b.ln2.b),
                             N: N, C: C, eps: config.layerNormEpsilon)
            b.cFc.forward(x: ln2, N: N, out: fch, params: p)
            geluForward(out: fcg, inp: fch, count: N * H)
            b.mlpProj.forward(x: fcg, N: N, out: fcproj, params: p)
            residualForward(out: res3, a: res2, b: fcproj, count: N * C)
            residual = UnsafePointer(res3)
            if l == stopAfterBlock { return nil }
        }
        let lnf = a.get("lnf", N * C), lnfm = a.get("lnfm", N), lnfr = a.get("lnfr", N)
        layerNormForward(out: lnf, mean: lnfm, rstd: lnfr, inp: residual, weight: p.value("ln_f.weight"), bias: p.value("ln_f.bias"),
                         N: N, C: C, eps: config.layerNormEpsilon)
        let logits = a.get("logits", N * V)
        embedding.headForward(h: lnf, N: N, logits: logits, params: p)
        return UnsafeMutableBufferPointer(start: logits, count: N * V)
    }

    /// Mean cross-entropy of the last forward's logits against `targets [B, T]` (negative = ignored),
    /// and optionally the gradient dlogits (mean over scored positions) into the activation buffer
    /// returned by `logitGradient`.
    public func crossEntropy(targets: [Int32], computeGradient: Bool) throws -> (loss: Double, losses: [Float]) {
        guard let a = acts else { throw ModelError.input("crossEntropy: call forward first") }
        let N = a.B * a.T, V = config.vocabSize
        guard targets.count == N else { throw ModelError.input("crossEntropy: \(targets.count) targets for \(N) positions") }
        let scored = targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) }
        var losses = [Float](repeating: 0, count: N)
        let dl: UnsafeMutablePointer<Float>? = computeGradient ? a.get("dlogits", N * V) : nil
        losses.withUnsafeMutableBufferPointer { lp in
            crossEntropyForwardBackward(losses: lp.baseAddress!, dlogits: dl, logits: a.get("logits", N * V), targets: targets,
                                        N: N, V: V, scale: 1 / Float(max(scored, 1)))
        }
        let total = losses.reduce(0.0) { $0 + Double($1) }
        return (total / Double(max(scored, 1)), losses)
    }

    /// The buffer for dlogits [B, T, V] that `backward` reads (filled by `crossEntropy` or by a
    /// distillation loss).
    public func logitGradient() -> UnsafeMutableBufferPointer<Float> {
        let a = acts!
        let n = a.B * a.T * config.vocabSize
        return UnsafeMutableBufferPointer(start: a.get("dlogits", n), count: n)
    }

    // MARK: - Backward

    /// Backpropagates `logitGradient()` through the last forward, accumulating into `params.grads`
    /// (call `params.zeroGrads()` first). `onLayerDone(l)` fires when layer l's gradients are final
    /// (for overlapping their all-reduce with the rest of the backward pass).
    public func backward(onLayerDone: ((Int) -> Void)? = nil) throws {
        guard let a = acts else { throw ModelError.input("backward: call forward first") }
        let B = a.B, T = a.T, N = B * T
        let C = config.nEmbd, V = config.vocabSize, NH = config.nHead, L = config.nLayer, H = config.nInner
        let p = params
        let dlogits = a.get("dlogits", N * V)

        // Head and final LayerNorm.
        let lnf = a.get("lnf", N * C)
        let dlnf = a.get("d.lnf", N * C)
        embedding.headBackward(h: lnf, dlogits: dlogits, dh: dlnf, N: N, params: p)
        let dres = a.get("d.res", N * C)      // gradient of the residual stream
        dres.update(repeating: 0, count: N * C)
        let lastResidual = L > 0 ? a.get("res3.\(L - 1)", N * C) : a.get("x0", N * C)
        layerNormBackward(dinp: dres, dweight: p.grad("ln_f.weight"), dbias: p.grad("ln_f.bias"), dout: dlnf, inp: lastResidual,
                          weight: p.value("ln_f.weight"), mean: a.get("lnfm", N), rstd: a.get("lnfr", N), N: N, C: C)

        let dtmp = a.get("d.tmp", N * C), dtmp2 = a.get("d.tmp2", N * C)
        let dfcg = a.get("d.fcg", N * H), dfch = a.get("d.fch", N * H)
        let dqkv = a.get("d.qkv", N * 3 * C), dscratch = a.get("d.att", B * NH * T * T)
        for l in stride(from: L - 1, through: 0, by: -1) {
            let b = blocks[l]
            let residualIn = l == 0 ? a.get("x0", N * C) : a.get("res3.\(l - 1)", N * C)
            let res2 = a.get("res2.\(l)", N * C)
            // res3 = res2 + mlp(ln2(res2)): dres flows to res2 directly and through the MLP.
            b.mlpProj.backward(x: a.get("fcg.\(l)", N * H), dout: dres, dx: dfcg, N: N, params: p)
            geluBackward(dinp: dfch, inp: a.get("fch.\(l)", N * H), dout: dfcg, count: N * H)
            b.cFc.backward(x: a.get("ln2.\(l)", N * C), dout: dfch, dx: dtmp, N: N, params: p)
            layerNormBackward(dinp: dres, dweight: p.grad(b.ln2.w), dbias: p.grad(b.ln2.b), dout: dtmp, inp: res2,
                              weight: p.value(b.ln2.w), mean: a.get("ln2m.\(l)", N), rstd: a.get("ln2r.\(l)", N), N: N, C: C)
            // res2 = residualIn + attn(ln1(residualIn))
            b.attnProj.backward(x: a.get("atty.\(l)", N * C), dout: dres, dx: dtmp2, N: N, params: p)
            attentionBackward(dqkv: dqkv, scratch: dscratch, dout: dtmp2, qkv: a.get("qkv.\(l)", N * 3 * C),
                              att: a.get("att.\(l)", B * NH * T * T), B: B, T: T, C: C, NH: NH)
            b.cAttn.backward(x: a.get("ln1.\(l)", N * C), dout: dqkv, dx: dtmp, N: N, params: p)
            layerNormBackward(dinp: dres, dweight: p.grad(b.ln1.w), dbias: p.grad(b.ln1.b), dout: dtmp, inp: residualIn,
                              weight: p.value(b.ln1.w), mean: a.get("ln1m.\(l)", N), rstd: a.get("ln1r.\(l)", N), N: N, C: C)
            onLayerDone?(l)
        }
        // Embeddings: token rows (tied with the head) and positions.
        let dwpe = p.grad("wpe.weight")
        for i in 0..<N {
            let t = i % T
            let d = dres + i * C
            embedding.rowBackward(Int(lastIDs[i]), dx: d, params: p)
            let g = dwpe + t * C
            for c in 0..<C { g[c] += d[c] }
        }
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
