import CKernels
import Kernels

/// The sizes activations are carved by: rows N = B·T, channels C, MLP width H, heads NH.
public struct ActivationShape: Equatable, Sendable {
    public var B: Int, T: Int, C: Int, H: Int, NH: Int
    public var N: Int { B * T }

    public init(B: Int, T: Int, config: GPT2Config) {
        self.B = B; self.T = T; C = config.nEmbd; H = config.nInner; NH = config.nHead
    }
}

/// One block of floats carved into named buffers. `take(n)` hands out the next n floats (rounded
/// up to 16 for alignment). Counting mode (`base == nil`) only adds up the sizes, so each layout
/// below is written once and both sizes and allocates itself.
final class Arena {
    private let base: UnsafeMutablePointer<Float>?
    private let owns: Bool
    private(set) var used = 0
    /// A counting arena: measures a layout without allocating it.
    init() { base = nil; owns = false }
    /// An arena of `floats` zeroed floats.
    init(floats: Int) {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(floats, 1))
        p.initialize(repeating: 0, count: max(floats, 1))
        base = p
        owns = true
    }
    /// Carves memory someone else owns (a component's slice of a larger arena).
    init(base: UnsafeMutablePointer<Float>) { self.base = base; owns = false }
    deinit { if owns { base?.deallocate() } }

    /// n rounded up to the 16-float (64-byte) alignment every buffer keeps.
    static func rounded(_ n: Int) -> Int { (n + 15) / 16 * 16 }

    func take(_ n: Int) -> UnsafeMutablePointer<Float> {
        defer { used += Self.rounded(n) }
        // The counting arena hands out one never-dereferenced placeholder.
        return base.map { $0 + used } ?? UnsafeMutablePointer(bitPattern: 64)!
    }

    /// Floats a layout needs: runs `layout` against a counting arena.
    static func floats(_ layout: (Arena) -> Void) -> Int {
        let counter = Arena()
        layout(counter)
        return counter.used
    }
}

/// What backward needs from one transformer block (sizes in comments), including each linear's
/// component state (`saved[linear][component]`, sized by the components themselves).
struct BlockActivations {
    let ln1: UnsafeMutablePointer<Float>       // [N, C]  LN1 output = c_attn input
    let ln1Mean: UnsafeMutablePointer<Float>   // [N]
    let ln1Rstd: UnsafeMutablePointer<Float>   // [N]
    let qkv: UnsafeMutablePointer<Float>       // [N, 3C]
    let lse: UnsafeMutablePointer<Float>       // [B, NH, T] attention log-sum-exp per query row
    let atty: UnsafeMutablePointer<Float>      // [N, C]  attention output = attn.c_proj input
    let res2: UnsafeMutablePointer<Float>      // [N, C]  residual after attention = LN2 input
    let ln2: UnsafeMutablePointer<Float>       // [N, C]  LN2 output = c_fc input
    let ln2Mean: UnsafeMutablePointer<Float>   // [N]
    let ln2Rstd: UnsafeMutablePointer<Float>   // [N]
    let fch: UnsafeMutablePointer<Float>       // [N, H]  c_fc output = GELU input (GELU's output is recomputed)
    let saved: [[UnsafeMutablePointer<Float>]] // per linear (block order), per component: its savedFloats(rows: N)

    init(_ s: ActivationShape, _ a: Arena, block: Block) {
        let N = s.N, C = s.C
        ln1 = a.take(N * C); ln1Mean = a.take(N); ln1Rstd = a.take(N)
        qkv = a.take(N * 3 * C); lse = a.take(s.B * s.NH * s.T); atty = a.take(N * C); res2 = a.take(N * C)
        ln2 = a.take(N * C); ln2Mean = a.take(N); ln2Rstd = a.take(N)
        fch = a.take(N * s.H)
        saved = block.linears.map { lin in lin.components.map { a.take($0.savedFloats(rows: N)) } }
    }

    /// Floats of one block's activations at this shape.
    static func floats(_ s: ActivationShape, block: Block) -> Int { Arena.floats { _ = BlockActivations(s, $0, block: block) } }
}

/// Everything the training forward keeps for backward at one shape, in one allocation made
/// once per shape. With `recompute`, only each block's output is kept; backward recomputes a
/// block's activations into one shared region (sized for the largest block) just before it
/// needs them.
final class TrainingActivations {
    let shape: ActivationShape
    let recompute: Bool
    let x0: UnsafeMutablePointer<Float>              // [N, C] embeddings = block 0 input
    let outputs: [UnsafeMutablePointer<Float>]       // [N, C] per block: its output (next block's input)
    let lnf: UnsafeMutablePointer<Float>             // [N, C] final LayerNorm output = head input
    let lnfMean: UnsafeMutablePointer<Float>, lnfRstd: UnsafeMutablePointer<Float>
    let dlnf: UnsafeMutablePointer<Float>            // [N, C] head gradient (from the fused loss)
    // Scratch shared by all blocks.
    let fcg: UnsafeMutablePointer<Float>             // [N, H] GELU output
    let dres: UnsafeMutablePointer<Float>, dtmp: UnsafeMutablePointer<Float>   // [N, C]
    let dqkv: UnsafeMutablePointer<Float>            // [N, 3C]
    let dfc: UnsafeMutablePointer<Float>             // [N, H]
    let scratch: UnsafeMutablePointer<Float>         // the largest component's scratchFloats(rows: N) (lookups included)
    /// Token ids of the forward (for the embedding gradient).
    var ids: [Int32] = []
    private let blocks: [Block]
    private let kept: [BlockActivations]             // one per block (empty with recompute)
    private let region: UnsafeMutablePointer<Float>  // with recompute: room for the largest block's activations
    private let arena: Arena

    init(shape: ActivationShape, blocks: [Block], embedding: TokenEmbedding, recompute: Bool) {
        self.shape = shape
        self.recompute = recompute
        self.blocks = blocks
        let a = Arena(floats: Self.floats(shape, blocks: blocks, embedding: embedding, recompute: recompute))
        let l = Self.layout(shape, blocks, embedding, recompute, a)
        (x0, kept, region, outputs, lnf, lnfMean, lnfRstd, dlnf) = (l.x0, l.kept, l.region, l.outputs, l.lnf, l.lnfMean, l.lnfRstd, l.dlnf)
        (fcg, dres, dtmp, dqkv, dfc, scratch) = (l.fcg, l.dres, l.dtmp, l.dqkv, l.dfc, l.scratch)
        arena = a
    }

    /// Floats needed at this shape (the memory estimate uses it).
    static func floats(_ s: ActivationShape, blocks: [Block], embedding: TokenEmbedding, recompute: Bool) -> Int {
        Arena.floats { _ = layout(s, blocks, embedding, recompute, $0) }
    }

    private struct Layout {
        let x0: UnsafeMutablePointer<Float>, kept: [BlockActivations], region: UnsafeMutablePointer<Float>
        let outputs: [UnsafeMutablePointer<Float>], lnf: UnsafeMutablePointer<Float>, lnfMean: UnsafeMutablePointer<Float>
        let lnfRstd: UnsafeMutablePointer<Float>, dlnf: UnsafeMutablePointer<Float>, fcg: UnsafeMutablePointer<Float>
        let dres: UnsafeMutablePointer<Float>, dtmp: UnsafeMutablePointer<Float>, dqkv: UnsafeMutablePointer<Float>
        let dfc: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
    }

    private static func layout(_ s: ActivationShape, _ blocks: [Block], _ embedding: TokenEmbedding, _ recompute: Bool, _ a: Arena) -> Layout {
        let N = s.N, C = s.C
        let x0 = a.take(N * C)
        let kept = recompute ? [] : blocks.map { BlockActivations(s, a, block: $0) }
        let region = a.take(recompute ? blocks.map { BlockActivations.floats(s, block: $0) }.max() ?? 0 : 0)
        let outputs = blocks.map { _ in a.take(N * C) }
        let lnf = a.take(N * C), lnfMean = a.take(N), lnfRstd = a.take(N), dlnf = a.take(N * C)
        let fcg = a.take(N * s.H), dres = a.take(N * C), dtmp = a.take(N * C), dqkv = a.take(N * 3 * C), dfc = a.take(N * s.H)
        let layers: [WeightedLayer] = [embedding] + blocks.flatMap(\.linears)
        let scratch = a.take(layers.map { $0.scratchFloats(rows: N) }.max() ?? 0)
        return Layout(x0: x0, kept: kept, region: region, outputs: outputs, lnf: lnf, lnfMean: lnfMean, lnfRstd: lnfRstd, dlnf: dlnf,
                      fcg: fcg, dres: dres, dtmp: dtmp, dqkv: dqkv, dfc: dfc, scratch: scratch)
    }

    /// The saved activations of block l (carved from the shared region with recompute).
    func block(_ l: Int) -> BlockActivations { recompute ? BlockActivations(shape, Arena(base: region), block: blocks[l]) : kept[l] }
    /// Block l's input: the embeddings or the previous block's output.
    func input(_ l: Int) -> UnsafeMutablePointer<Float> { l == 0 ? x0 : outputs[l - 1] }
}

/// The inference forward's workspace: one layer's buffers for up to `capacity` rows, reused by
/// every block (nothing is kept for backward). The residual stream lives in `x`.
public final class InferenceWorkspace {
    public let capacity: Int
    let x: UnsafeMutablePointer<Float>       // [N, C] residual stream
    let ln1: UnsafeMutablePointer<Float>     // [N, C]
    let qkv: UnsafeMutablePointer<Float>     // [N, 3C]
    let atty: UnsafeMutablePointer<Float>    // [N, C]
    let ln2: UnsafeMutablePointer<Float>     // [N, C]
    let fc: UnsafeMutablePointer<Float>      // [N, H] c_fc output, then GELU's in place
    let proj: UnsafeMutablePointer<Float>    // [N, C]
    let stats: UnsafeMutablePointer<Float>   // [2N] LayerNorm mean and rstd (not kept)
    let scratch: UnsafeMutablePointer<Float> // the largest component's scratchFloats(rows: N) (lookups included)
    private let arena: Arena

    /// A workspace for up to `rows` rows of a model of `config` whose layers need `scratchFloats`.
    public init(rows: Int, config: GPT2Config, scratchFloats: Int) {
        capacity = rows
        let a = Arena(floats: Self.floats(rows: rows, config: config, scratchFloats: scratchFloats))
        (x, ln1, qkv, atty, ln2, fc, proj, stats, scratch) = Self.layout(rows, config, scratchFloats, a)
        arena = a
    }

    /// Floats a workspace of `rows` rows needs.
    public static func floats(rows: Int, config: GPT2Config, scratchFloats: Int) -> Int {
        Arena.floats { _ = layout(rows, config, scratchFloats, $0) }
    }

    private static func layout(_ N: Int, _ c: GPT2Config, _ scratchFloats: Int, _ a: Arena)
        -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
            UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
            UnsafeMutablePointer<Float>) {
        let C = c.nEmbd
        return (a.take(N * C), a.take(N * C), a.take(N * 3 * C), a.take(N * C), a.take(N * C), a.take(N * c.nInner),
                a.take(N * C), a.take(2 * N), a.take(scratchFloats))
    }
}

/// The element type of a KV cache: BF16 (half the bytes, what generation uses by default) or F32.
public enum KVPrecision: String, CaseIterable, Sendable {
    case bf16, f32
}

/// Keys and values of every layer for positions 0 ..< `used`, for generation: each new token
/// costs one row through the same inference forward. In BF16, rows are rounded once when stored
/// and attention widens them in registers (`squeeze_attend_bf16`); a fresh prompt (offset 0)
/// attends over its own F32 keys and values, as a forward without a cache does.
public final class KVCache {
    public let maxT: Int
    public let precision: KVPrecision
    /// Positions filled so far.
    public internal(set) var used = 0
    private let channels: Int
    private let keys: [UnsafeMutableRawPointer]     // per layer [maxT, C], F32 or BF16
    private let values: [UnsafeMutableRawPointer]

    /// A cache for `maxT` positions (at most n_positions; all of them by default).
    public init(config: GPT2Config, maxT: Int? = nil, precision: KVPrecision = .bf16) {
        let T = min(maxT ?? config.nPositions, config.nPositions), C = config.nEmbd
        self.maxT = T
        self.precision = precision
        channels = C
        let bytes = T * C * (precision == .bf16 ? 2 : 4)
        keys = (0..<config.nLayer).map { _ in UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64) }
        values = (0..<config.nLayer).map { _ in UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64) }
    }

    deinit { (keys + values).forEach { $0.deallocate() } }

    /// Bytes a cache of `positions` positions holds (at most n_positions).
    public static func bytes(config: GPT2Config, positions: Int, precision: KVPrecision) -> Int {
        2 * config.nLayer * min(positions, config.nPositions) * config.nEmbd * (precision == .bf16 ? 2 : 4)
    }

    /// Stores layer l's keys and values of T rows (`stride` apart in `k` and `v`) at positions
    /// offset ..< offset + T.
    func store(layer l: Int, keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, stride: Int, rows T: Int, at offset: Int) {
        let C = channels
        for t in 0..<T {
            switch precision {
            case .f32:
                (keys[l].assumingMemoryBound(to: Float.self) + (offset + t) * C).update(from: k + t * stride, count: C)
                (values[l].assumingMemoryBound(to: Float.self) + (offset + t) * C).update(from: v + t * stride, count: C)
            case .bf16:
                squeeze_f32_to_bf16_n(k + t * stride, keys[l].assumingMemoryBound(to: UInt16.self) + (offset + t) * C, C)
                squeeze_f32_to_bf16_n(v + t * stride, values[l].assumingMemoryBound(to: UInt16.self) + (offset + t) * C, C)
            }
        }
    }

    /// out [T, C] (`outStride`) = attention of queries q [T, ·] (`qStride`, heads side by side)
    /// at positions offset ..< offset + T over layer l's cached positions 0 ... offset + t.
    func attend(layer l: Int, q: UnsafePointer<Float>, qStride: Int, rows T: Int, offset: Int, NH: Int,
                out: UnsafeMutablePointer<Float>, outStride: Int) {
        let C = channels, hs = C / NH
        switch precision {
        case .f32:
            attentionForward(out: out, outStride: outStride, lse: nil, q: q, qStride: qStride,
                             k: keys[l].assumingMemoryBound(to: Float.self), v: values[l].assumingMemoryBound(to: Float.self),
                             kvStride: C, B: 1, Tq: T, Tk: offset + T, offset: offset, NH: NH, hs: hs)
        case .bf16:
            attentionOverBF16(out: out, outStride: outStride, q: q, qStride: qStride, k: keys[l].assumingMemoryBound(to: UInt16.self),
                              v: values[l].assumingMemoryBound(to: UInt16.self), kvStride: C, Tq: T, offset: offset, NH: NH, hs: hs)
        }
    }
}
