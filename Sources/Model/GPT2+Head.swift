import Kernels
import Tensor

/// Chunk buffers of the fused LM head: student logits, teacher logits and their gradient for
/// `rows` rows of the vocabulary at a time, each allocated the first time it is needed (evaluation
/// needs only the first).
final class HeadScratch {
    let rows: Int, vocab: Int
    private var buffers: [UnsafeMutablePointer<Float>?] = [nil, nil, nil]

    init(rows: Int, vocab: Int) {
        self.rows = rows
        self.vocab = vocab
    }
    deinit { for b in buffers { b?.deallocate() } }

    private func buffer(_ i: Int) -> UnsafeMutablePointer<Float> {
        if let b = buffers[i] { return b }
        let b = UnsafeMutablePointer<Float>.allocate(capacity: rows * vocab)
        b.initialize(repeating: 0, count: rows * vocab)
        buffers[i] = b
        return b
    }
    var logits: UnsafeMutablePointer<Float> { buffer(0) }
    var teacherLogits: UnsafeMutablePointer<Float> { buffer(1) }
    var dlogits: UnsafeMutablePointer<Float> { buffer(2) }

    /// Rows per chunk: about 128 MB of logits per buffer (so the head's GEMM repacks the
    /// [V, C] embedding once per 667 rows of GPT-2, not per 166), at least 16 rows.
    static func rows(vocab: Int) -> Int { max(16, (128 << 20) / (4 * max(vocab, 1))) }
}

/// The LM head fused with its loss: logits are made, scored and turned into gradients chunk by
/// chunk over rows, so [N, V] logits never exist whole (as Liger-Kernel's fused linear losses).
extension GPT2 {
    /// Loss of the rows of `hidden [N, C]` (final LayerNorm output): cross-entropy against
    /// `targets` (negative = ignored) and, with a teacher (its model and its hidden states for the
    /// same tokens), `α T² KL(teacher ‖ student)`; returns both sums over scored rows (see
    /// `distillationLoss`). With `dHidden`, accumulates the head's weight gradient (wte) scaled
    /// by `scale` and writes `dHidden [N, C]` for `backward`. `rowLosses` gets each row's CE.
    public func headLoss(hidden: UnsafePointer<Float>, N: Int, targets: UnsafePointer<Int32>, teacher: (model: GPT2, hidden: UnsafePointer<Float>)?,
                         temperature: Float, alpha: Float, scale: Float, dHidden: UnsafeMutablePointer<Float>?,
                         rowLosses: UnsafeMutablePointer<Float>? = nil) -> (kd: Double, ce: Double) {
        let V = config.vocabSize, C = config.nEmbd
        let chunk = HeadScratch.rows(vocab: V)
        if headScratch == nil || headScratch!.rows < min(chunk, N) { headScratch = HeadScratch(rows: min(chunk, max(N, 1)), vocab: V) }
        let buf = headScratch!
        var kd = 0.0, ce = 0.0
        var r0 = 0
        while r0 < N {
            let n = min(buf.rows, N - r0)
            let h = hidden + r0 * C
            embedding.headForward(h: h, N: n, logits: buf.logits, params: params)
            if let t = teacher { t.model.embedding.headForward(h: t.hidden + r0 * C, N: n, logits: buf.teacherLogits, params: t.model.params) }
            let (k, c) = distillationLoss(student: buf.logits, teacher: teacher == nil ? nil : UnsafePointer(buf.teacherLogits),
                                          targets: targets + r0, N: n, V: V, temperature: temperature, alpha: alpha, scale: scale,
                                          dlogits: dHidden == nil ? nil : buf.dlogits, rowLosses: rowLosses.map { $0 + r0 })
            kd += k
            ce += c
            if let dHidden { embedding.headBackward(h: h, dlogits: buf.dlogits, dh: dHidden + r0 * C, N: n, params: params) }
            r0 += n
        }
        return (kd, ce)
    }
}
