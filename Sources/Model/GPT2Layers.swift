/// The four linear layers of a GPT-2 block as Hugging Face names them, with their shapes: the one
/// table the model's blocks, the compression layout, the factorization plan and the checks of a
/// config against its weights all derive from.
public enum BlockLinear: String, CaseIterable, Sendable {
    case attention = "attn.c_attn"
    case attentionProjection = "attn.c_proj"
    case fc = "mlp.c_fc"
    case fcProjection = "mlp.c_proj"

    /// [in, out] of this layer in a model of `c` (HF Conv1D layout).
    public func shape(_ c: GPT2Config) -> (in: Int, out: Int) {
        switch self {
        case .attention: return (c.nEmbd, 3 * c.nEmbd)
        case .attentionProjection: return (c.nEmbd, c.nEmbd)
        case .fc: return (c.nEmbd, c.nInner)
        case .fcProjection: return (c.nInner, c.nEmbd)
        }
    }

    /// "h.<block>.<layer>".
    public func name(block: Int) -> String { "h.\(block).\(rawValue)" }

    /// The layer's name in llama.cpp's GGUF layout (`blk.<block>.<name>.weight`, `GGUFLayout`).
    public var ggufName: String {
        switch self {
        case .attention: return "attn_qkv"
        case .attentionProjection: return "attn_output"
        case .fc: return "ffn_up"
        case .fcProjection: return "ffn_down"
        }
    }

    /// The block and layer a canonical name "h.<l>.<layer>" names in a model of `layers` blocks
    /// (nil for "h.-1.…", "h.01.…", "h.0.x.mlp.c_fc" and anything else no block would look up).
    public static func parse(_ name: String, layers: Int) -> (block: Int, linear: BlockLinear)? {
        let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "h", let l = Int(parts[1]), l >= 0, l < layers, "\(l)" == parts[1],
              let kind = BlockLinear(rawValue: String(parts[2])) else { return nil }
        return (l, kind)
    }
}

extension GPT2Config {
    /// Every compressible weight in model order — "wte" [V, C], then each block's linears
    /// [in, out] — from the layer table.
    public var compressibleShapes: [(name: String, rows: Int, cols: Int)] {
        [("wte", vocabSize, nEmbd)] + (0..<nLayer).flatMap { l in
            BlockLinear.allCases.map { k in let s = k.shape(self); return (k.name(block: l), s.in, s.out) }
        }
    }
}

/// One transformer block's layers (pre-LayerNorm GPT-2): LN1 -> attention -> residual,
/// LN2 -> MLP (c_fc, GELU, c_proj) -> residual. Parameter names are made once, here.
public final class Block {
    public let index: Int
    public let prefix: String
    public let ln1: (w: String, b: String), ln2: (w: String, b: String)
    /// The linears in `BlockLinear` order.
    public let linears: [Linear]
    public var cAttn: Linear { linears[0] }
    public var attnProj: Linear { linears[1] }
    public var cFc: Linear { linears[2] }
    public var mlpProj: Linear { linears[3] }

    /// An uncompressed block of a model of `config`.
    public init(index: Int, config c: GPT2Config) {
        self.index = index
        prefix = "h.\(index)"
        ln1 = ("\(prefix).ln_1.weight", "\(prefix).ln_1.bias")
        ln2 = ("\(prefix).ln_2.weight", "\(prefix).ln_2.bias")
        linears = BlockLinear.allCases.map { k in
            let s = k.shape(c)
            return Linear(dense: k.name(block: index), inFeatures: s.in, outFeatures: s.out)
        }
    }

    /// The block's layer of this kind.
    public func linear(_ kind: BlockLinear) -> Linear { linears[BlockLinear.allCases.firstIndex(of: kind)!] }
}

/// A model's layer forms without its parameters: what the parameter layout, the activation arena
/// and the memory estimates are sized from (a loaded model's, or one read from config.json alone).
public struct GPT2Forms {
    public let config: GPT2Config
    public let embedding: TokenEmbedding
    public let blocks: [Block]

    public init(config: GPT2Config, embedding: TokenEmbedding, blocks: [Block]) {
        self.config = config
        self.embedding = embedding
        self.blocks = blocks
    }

    /// An uncompressed model of `config`.
    public init(config: GPT2Config) {
        self.init(config: config, embedding: TokenEmbedding(vocab: config.vocabSize, channels: config.nEmbd),
                  blocks: (0..<config.nLayer).map { Block(index: $0, config: config) })
    }

    /// The embedding, then every block linear.
    public var weightedLayers: [WeightedLayer] { [embedding] + blocks.flatMap(\.linears) }

    /// The weighted layer called `name` ("wte" or a linear's prefix; nil for anything else).
    public func layer(_ name: String) -> WeightedLayer? {
        name == embedding.name ? embedding : BlockLinear.parse(name, layers: blocks.count).map { blocks[$0.block].linear($0.linear) }
    }

    /// Every parameter the layer forms need, with its shape and weight-decay flag, in a fixed
    /// order (embeddings, then block by block, then the final LayerNorm): the one table that
    /// parameter buffers, loading and shape checks follow.
    public var parameterLayout: [ParameterSet.Spec] {
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

    /// Parameter floats, with alignment padding.
    public var parameterFloats: Int { ParameterSet.floats(for: parameterLayout) }

    /// Bytes of the training forward's activations for a micro-batch of [B, T] (component state
    /// included).
    public func trainingActivationBytes(B: Int, T: Int, recompute: Bool) -> Int {
        4 * TrainingActivations.floats(ActivationShape(B: B, T: T, config: config), blocks: blocks, embedding: embedding, recompute: recompute)
    }

    /// Bytes of the inference forward's workspace for `rows` rows.
    public func inferenceBytes(rows: Int) -> Int {
        4 * InferenceWorkspace.floats(rows: rows, config: config, scratchFloats: weightedLayers.map { $0.scratchFloats(rows: rows) }.max() ?? 0)
    }

    /// Bytes of the fused head's chunk buffers: student logits, plus teacher logits and their
    /// gradient when distilling (`buffers` 3), student logits only when evaluating (1); with
    /// `backward`, the embedding components' state between the head's two passes.
    public func headBytes(rows: Int, buffers: Int, backward: Bool = false) -> Int {
        4 * HeadScratch.floats(rows: min(HeadScratch.rows(vocab: config.vocabSize), max(rows, 1)), forms: self, buffers: buffers, backward: backward)
    }
}
