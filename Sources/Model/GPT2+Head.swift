import Kernels
import Tensor

/// Chunk buffers of the fused LM head for `rows` rows of the vocabulary at a time: student
/// logits, teacher logits and their gradient, and the embedding components' scratch and state
/// between the head's backward passes; each allocated the first time it is needed (evaluation
/// needs only the logits and, for a factored embedding, the scratch).
final class HeadScratch {
    let rows: Int, vocab: Int
    let sizes: [Int]
    private var buffers: [UnsafeMutablePointer<Float>?]

    /// `scratchFloats` and `savedFloats`: the components' needs for `rows` rows.
    init(rows: Int, vocab: Int, scratchFloats: Int, savedFloats: Int) {
        self.rows = rows
        self.vocab = vocab
        sizes = [rows * vocab, rows * vocab, rows * vocab, scratchFloats, savedFloats]
        buffers = sizes.map { _ in nil }
    }
    deinit { for b in buffers { b?.deallocate() } }

    private func buffer(_ i: Int) -> UnsafeMutablePointer<Float> {
        if let b = buffers[i] { return b }
        let b = UnsafeMutablePointer<Float>.allocate(capacity: max(sizes[i], 1))
        b.initialize(repeating: 0, count: max(sizes[i], 1))
        buffers[i] = b
        return b
    }
    var logits: UnsafeMutablePointer<Float> { buffer(0) }
    var teacherLogits: UnsafeMutablePointer<Float> { buffer(1) }
    var dlogits: UnsafeMutablePointer<Float> { buffer(2) }
    var scratch: UnsafeMutablePointer<Float> { buffer(3) }
    var saved: UnsafeMutablePointer<Float> { buffer(4) }

    /// Rows per chunk: about 128 MB of logits per buffer (so the head's GEMM repacks the
    /// [V, C] embedding once per 667 rows of GPT-2, not per 166), at least 16 rows.
    static func rows(vocab: Int) -> Int { max(16, (128 << 20) / (4 * max(vocab, 1))) }

    /// Floats a model of `forms` allocates here for chunks of `rows` rows: `buffers` logit
    /// buffers, the components' scratch, and with `backward` their state.
    static func floats(rows: Int, forms: GPT2Forms, buffers: Int, backward: Bool) -> Int {
        let e = forms.embedding
        return buffers * rows * forms.config.vocabSize + e.scratchFloats(rows: rows) + (backward ? e.headSavedFloats(rows: rows) : 0)
    }
}

/// The head's chunk buffers, shared by every network's inference forward.
extension InferenceNetwork {
    /// The head's chunk buffers for up to `N` rows (and a teacher's head beside them).
    func headBuffers(rows N: Int, teacher: InferenceNetwork?, savedFloats: Int = 0) -> HeadScratch {
        let chunk = min(HeadScratch.rows(vocab: config.vocabSize), max(N, 1))
        let scratch = max(layerScratchFloats(rows: chunk), teacher?.layerScratchFloats(rows: chunk) ?? 0)
        // Reused while it is large enough for the rows, the scratch and the state asked for.
        if let b = inferenceBuffers.head, b.rows >= chunk, b.sizes[3] >= scratch, b.sizes[4] >= savedFloats { return b }
        let b = HeadScratch(rows: chunk, vocab: config.vocabSize, scratchFloats: scratch, savedFloats: savedFloats)
        inferenceBuffers.head = b
        return b
    }

    /// Cross-entropy sum of the rows of `hidden [N, C]` against `targets` (negative = ignored),
    /// the head run chunk by chunk so [N, V] logits never exist whole.
    public func evaluationLoss(hidden: UnsafePointer<Float>, N: Int, targets: UnsafePointer<Int32>) -> (kd: Double, ce: Double) {
        let V = config.vocabSize, C = config.nEmbd, buf = headBuffers(rows: N, teacher: nil)
        var ce = 0.0
        for r0 in stride(from: 0, to: N, by: buf.rows) {
            let n = min(buf.rows, N - r0)
            head(hidden + r0 * C, N: n, logits: buf.logits, scratch: buf.scratch)
            ce += distillationLoss(student: buf.logits, teacher: nil, targets: targets + r0, N: n, V: V, temperature: 1, alpha: 0, scale: 1,
                                   dlogits: nil, rowLosses: nil).ce
        }
        return (0, ce)
    }
}

/// The LM head fused with its loss: logits are made, scored and turned into gradients chunk by
/// chunk over rows, so [N, V] logits never exist whole (as Liger-Kernel's fused linear losses).
extension GPT2 {
    /// Loss of the rows of `hidden [N, C]` (final LayerNorm output): cross-entropy against
    /// `targets` (negative = ignored) and, with a teacher (any network and its hidden states for
    /// the same tokens), `α T² KL(teacher ‖ student)`; returns both sums over scored rows (see
    /// `distillationLoss`). With `dHidden`, accumulates the head's weight gradient (wte) scaled
    /// by `scale` and writes `dHidden [N, C]` for `backward`. `rowLosses` gets each row's CE.
    public func headLoss(hidden: UnsafePointer<Float>, N: Int, targets: UnsafePointer<Int32>, teacher: (model: InferenceNetwork, hidden: UnsafePointer<Float>)?,
                         temperature: Float, alpha: Float, scale: Float, dHidden: UnsafeMutablePointer<Float>?,
                         rowLosses: UnsafeMutablePointer<Float>? = nil) -> (kd: Double, ce: Double) {
        let V = config.vocabSize, C = config.nEmbd
        let buf = headBuffers(rows: N, teacher: teacher?.model, savedFloats: embedding.headSavedFloats(rows: min(HeadScratch.rows(vocab: V), max(N, 1))))
        var kd = 0.0, ce = 0.0
        var r0 = 0
        while r0 < N {
            let n = min(buf.rows, N - r0)
            let h = hidden + r0 * C
            head(h, N: n, logits: buf.logits, scratch: buf.scratch)
            if let t = teacher { t.model.head(t.hidden + r0 * C, N: n, logits: buf.teacherLogits, scratch: buf.scratch) }
            let (k, c) = distillationLoss(student: buf.logits, teacher: teacher == nil ? nil : UnsafePointer(buf.teacherLogits),
                                          targets: targets + r0, N: n, V: V, temperature: temperature, alpha: alpha, scale: scale,
                                          dlogits: dHidden == nil ? nil : buf.dlogits, rowLosses: rowLosses.map { $0 + r0 })
            kd += k
            ce += c
            if let dHidden {
                embedding.headBackward(h: h, dlogits: buf.dlogits, dh: dHidden + r0 * C, N: n, params: params, saved: buf.saved, scratch: buf.scratch)
            }
            r0 += n
        }
        return (kd, ce)
    }
}
