import Kernels
import Tensor

/// The packed model: a read-only GPT-2 for everything that only runs forward (eval, generate,
/// the teacher of a distillation, the benchmarks), every layer in its packed form with its own
/// kernels (`PackedOperator`: dense F32 read where it lies, BF16 rows, a bitmask or 2:4 sparse
/// form, ggml blocks, two low-rank factors, a Kronecker sum), chosen per row count (decode GEMV,
/// prefill GEMM) and per CPU at run time. The trainable `GPT2` (F32 parameters, masks, gradients)
/// is what compression and distillation change; `PackedGPT2(model)` freezes it. Both run the same
/// inference forward (`InferenceNetwork`).
public final class PackedGPT2: InferenceNetwork {
    public let config: GPT2Config
    public let inferenceBuffers = InferenceBuffers()
    public let precision: PackedPrecision
    /// The block linears' packed forms [block][`BlockLinear` order] and their biases.
    let linears: [[PackedLinear]]
    let embedding: PackedEmbedding
    /// Parameters read where they lie (positions, LayerNorms, biases, dense F32 weights).
    private let source: ParameterSet
    private let norms: [(weight: UnsafePointer<Float>, bias: UnsafePointer<Float>)]

    /// Packs `model` in `precision` (values of dense and sparse forms; quantized forms keep their
    /// blocks). The model's parameters stay alive with the packed model: dense F32 weights,
    /// positions, norms and biases are read from them, not copied.
    public convenience init(_ model: GPT2, precision: PackedPrecision = .f32) throws {
        try self.init(model, precision: precision, prepacked: [:])
    }

    /// Packs `model`, taking the block-linear components found in `prepacked` and the
    /// `embedding` as they are (packed from the weight files by `load(directory:)`, `load(gguf:)`).
    init(_ model: GPT2, precision: PackedPrecision, prepacked: [ObjectIdentifier: PackedOperator], embedding prebuilt: PackedEmbedding? = nil) throws {
        config = model.config
        self.precision = precision
        source = model.params
        let p = model.params
        linears = try model.blocks.map { b in
            try b.linears.map { lin in
                do {
                    return PackedLinear(bias: p.value(lin.biasName), outputs: lin.outFeatures,
                                        terms: try lin.components.map { try prepacked[ObjectIdentifier($0)] ?? $0.packed(params: p, precision: precision) })
                } catch let e as ModelError { throw ModelError.input("layer \(lin.name): \(e)") }
            }
        }
        embedding = try prebuilt ?? packedEmbedding(model.embedding, params: p, precision: precision)
        norms = model.blocks.flatMap { [$0.ln1, $0.ln2] }.map { (UnsafePointer(p.value($0.w)), UnsafePointer(p.value($0.b))) }
            + [(UnsafePointer(p.value("ln_f.weight")), UnsafePointer(p.value("ln_f.bias")))]
    }

    /// Bytes of packed weights a forward reads (the embedding once, as the head), wpe excluded.
    public var weightBytes: Int { embedding.bytes + linears.joined().reduce(0) { $0 + $1.bytes } }

    /// FLOPs per token of the block linears and the head (attention and the rest excluded).
    public var flopsPerToken: Double { embedding.flops + linears.joined().reduce(0) { $0 + $1.terms.reduce(0) { $0 + $1.flops } } }

    public func layerScratchFloats(rows N: Int) -> Int {
        max(embedding.scratchFloats(rows: N), linears.joined().map { $0.scratchFloats(rows: N) }.max() ?? 0)
    }

    public func embedTokens(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.gather(ids, into: x, scratch: scratch)
    }

    public var positionEmbedding: UnsafePointer<Float> { UnsafePointer(source.value("wpe.weight")) }

    public func layerNorm(block l: Int, second: Bool) -> (weight: UnsafePointer<Float>, bias: UnsafePointer<Float>) {
        l == config.nLayer ? norms[2 * l] : norms[2 * l + (second ? 1 : 0)]
    }

    public func linear(block l: Int, _ kind: BlockLinear, x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>,
                       scratch: UnsafeMutablePointer<Float>) {
        linears[l][BlockLinear.allCases.firstIndex(of: kind)!].apply(x, N: N, out: out, scratch: scratch)
    }

    public func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.head(h, N: N, logits: logits, scratch: scratch)
    }
}

/// A packed block linear: out = b + Σ terms (a layer of several components, e.g. low rank plus a
/// sparse residual, keeps one term each).
final class PackedLinear {
    let bias: UnsafePointer<Float>
    let outputs: Int
    let terms: [PackedOperator]
    init(bias: UnsafeMutablePointer<Float>, outputs: Int, terms: [PackedOperator]) {
        self.bias = UnsafePointer(bias)
        self.outputs = outputs
        self.terms = terms
    }
    var bytes: Int { terms.reduce(0) { $0 + $1.bytes } + 4 * outputs }
    func scratchFloats(rows N: Int) -> Int { terms.map { $0.scratchFloats(rows: N) }.max() ?? 0 }

    /// out [N, out] = x · W + b: the bias first, each term added onto it (as the trainable
    /// `Linear` does, so a dense F32 layer gives the same bits).
    func apply(_ x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        let n = outputs, b = bias
        parallelFor(N, minChunk: 32) { rows in
            for i in rows { (out + i * n).update(from: b, count: n) }
        }
        for t in terms { t.apply(x, N: N, into: out, accumulate: true, scratch: scratch) }
    }
}

/// The tied embedding of a packed model: lookups of its rows and the head's h · Wᵀ.
protocol PackedEmbedding: AnyObject {
    var bytes: Int { get }
    /// FLOPs per row of the head.
    var flops: Double { get }
    func scratchFloats(rows N: Int) -> Int
    func gather(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)
    func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>)
}

/// An embedding packed as rows [V, C] (dense F32 or BF16, sparse, ggml blocks along C).
final class RowsEmbedding: PackedEmbedding {
    let rows: PackedRows
    init(_ rows: PackedRows) { self.rows = rows }
    var bytes: Int { rows.bytes }
    var flops: Double { rows.flops }
    func scratchFloats(rows N: Int) -> Int { rows.scratchFloats(rows: N) }
    func gather(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) { rows.gather(ids, into: x) }
    func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        rows.apply(h, N: N, into: logits, accumulate: false, scratch: scratch)
    }
}

/// A factored embedding (low rank, Kronecker, several components) run by its own components on
/// the trainable parameters: its head is already factored, its lookups batched.
final class ComponentEmbedding: PackedEmbedding {
    let embedding: TokenEmbedding, params: ParameterSet
    init(_ embedding: TokenEmbedding, params: ParameterSet) { self.embedding = embedding; self.params = params }
    var bytes: Int { embedding.components.reduce(0) { $0 + $1.storedBytes(valueBytes: 4) } }
    var flops: Double { 2 * Double(embedding.counts.stored) }
    func scratchFloats(rows N: Int) -> Int { embedding.scratchFloats(rows: N) }
    func gather(_ ids: UnsafeBufferPointer<Int32>, into x: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.gather(ids, into: x, params: params, scratch: scratch)
    }
    func head(_ h: UnsafePointer<Float>, N: Int, logits: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>) {
        embedding.headForward(h: h, N: N, logits: logits, params: params, scratch: scratch)
    }
}

/// The embedding's packed form: rows [V, C] when it is one dense, masked or quantized-dense
/// weight; its components otherwise.
private func packedEmbedding(_ e: TokenEmbedding, params p: ParameterSet, precision: PackedPrecision) throws -> PackedEmbedding {
    let (V, C) = (e.vocab, e.channels)
    switch e.single {
    case let d as DenseComponent:
        let w = UnsafePointer(p.value(d.weightName))
        if let mask = d.mask {
            return RowsEmbedding(try Packing.sparse(w, mask: mask, inFeatures: C, outFeatures: V, nm24: false, precision: precision, rowsLayout: true))
        }
        return RowsEmbedding(Packing.rowMajor(w, rows: V, cols: C, precision: precision, owner: p))
    case let q as QuantizedComponent where q.inner is DenseComponent:
        guard let rows = try q.packed(params: p, precision: precision) as? PackedRows else { return ComponentEmbedding(e, params: p) }
        return RowsEmbedding(rows)
    default:
        return ComponentEmbedding(e, params: p)
    }
}
