import CKernels
import Foundation
import Tensor

// Causal self-attention, block by block with an online softmax (FlashAttention's scheme): no
// T x T matrix is ever stored, only 64 x 64 blocks per worker. Training keeps the per-row
// log-sum-exp of the scores, from which backward recomputes each block's probabilities.
//
// Layout: row t of batch b of Q at q + (b·Tq + t)·qStride + h·hs (heads side by side, as in
// GPT-2's qkv), keys and values likewise with kvStride, outputs with outStride. Query t sits at
// absolute position offset + t and attends keys 0 ... offset + t (offset > 0 with a KV cache).
// Work is split over (batch, head) pairs; each worker issues small single-threaded GEMMs.

/// Query and key block sizes (64 x 64 x hs GEMMs stay single-threaded in OpenBLAS).
let attentionBlock = 64

/// Causal attention forward for all heads. out: [B, Tq, ·] (outStride); lse (optional):
/// [B, NH, Tq] natural log of Σ_j exp(score_ij) for each query row (scores scaled by 1/√hs).
public func attentionForward(out: UnsafeMutablePointer<Float>, outStride: Int, lse: UnsafeMutablePointer<Float>?,
                             q: UnsafePointer<Float>, qStride: Int, k: UnsafePointer<Float>, v: UnsafePointer<Float>, kvStride: Int,
                             B: Int, Tq: Int, Tk: Int, offset: Int, NH: Int, hs: Int) {
    precondition(Tk >= offset + Tq, "attentionForward: \(Tk) keys cannot serve queries up to position \(offset + Tq - 1)")
    let scale = 1 / Float(hs).squareRoot()
    let bq = attentionBlock, bk = attentionBlock
    BLAS.singleThreaded {
        parallelFor(B * NH) { tasks in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: bq * bk + bq * hs + 2 * bq) { scratch in
                let s = scratch.baseAddress!, o = s + bq * bk, m = o + bq * hs, l = m + bq
                for task in tasks {
                    let b = task / NH, h = task % NH
                    let qh = q + b * Tq * qStride + h * hs
                    let kh = k + b * Tk * kvStride + h * hs, vh = v + b * Tk * kvStride + h * hs
                    var q0 = 0
                    while q0 < Tq {
                        let nq = min(bq, Tq - q0)
                        let keys = offset + q0 + nq   // keys the block's last query sees
                        for i in 0..<nq { m[i] = -Float.infinity; l[i] = 0 }
                        o.update(repeating: 0, count: nq * hs)
                        var k0 = 0
                        while k0 < keys {
                            let nk = min(bk, keys - k0)
                            // S [nq, nk] = scale · Q_blk · K_blkᵀ
                            sgemm(transB: true, m: nq, n: nk, k: hs, alpha: scale, a: qh + q0 * qStride, lda: qStride,
                                  b: kh + k0 * kvStride, ldb: kvStride, c: s, ldc: bk)
                            for i in 0..<nq {
                                let row = s + i * bk
                                // Keys k0 + j with k0 + j <= offset + q0 + i are visible.
                                let visible = min(nk, offset + q0 + i - k0 + 1)
                                guard visible > 0 else { row.update(repeating: 0, count: nk); continue }
                                let mNew = max(m[i], maxValue(row, count: visible))
                                let sum = expShifted(row, row, count: visible, shift: mNew)
                                if visible < nk { (row + visible).update(repeating: 0, count: nk - visible) }
                                let correction = fastExp(m[i] - mNew)
                                l[i] = l[i] * correction + Float(sum)
                                if correction != 1 { Kernels.scale(o + i * hs, count: hs, by: correction) }
                                m[i] = mNew
                            }
                            // O [nq, hs] += P [nq, nk] · V_blk [nk, hs]
                            sgemm(m: nq, n: hs, k: nk, a: s, lda: bk, b: vh + k0 * kvStride, ldb: kvStride, beta: 1, c: o, ldc: hs)
                            k0 += nk
                        }
                        for i in 0..<nq {
                            let dst = out + (b * Tq + q0 + i) * outStride + h * hs
                            let inv = 1 / l[i]
                            for d in 0..<hs { dst[d] = o[i * hs + d] * inv }
                            lse?[(b * NH + h) * Tq + q0 + i] = m[i] + logf(l[i])
                        }
                        q0 += nq
                    }
                }
            }
        }
    }
}

/// Causal attention of queries q [Tq, ·] (`qStride`, heads side by side) at positions
/// offset ..< offset + Tq over a BF16 key/value cache [offset + Tq, kvStride] of one sequence
/// (generation): each (query, head) pair reads its keys and values in BF16 and widens them in
/// registers (`squeeze_attend_bf16`), F32 accumulation.
public func attentionOverBF16(out: UnsafeMutablePointer<Float>, outStride: Int, q: UnsafePointer<Float>, qStride: Int,
                              k: UnsafePointer<UInt16>, v: UnsafePointer<UInt16>, kvStride: Int, Tq: Int, offset: Int, NH: Int, hs: Int) {
    let scale = 1 / Float(hs).squareRoot()
    parallelFor(Tq * NH) { tasks in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: offset + Tq) { scores in
            for task in tasks {
                let t = task / NH, h = task % NH
                squeeze_attend_bf16(q + t * qStride + h * hs, k + h * hs, v + h * hs, kvStride, offset + t + 1, hs, scale,
                                    scores.baseAddress!, out + t * outStride + h * hs)
            }
        }
    }
}

/// The teacher's side of the attention term of a distillation: its queries and keys
/// [B·T, 2C] (`stride` apart), its log-sum-exps [B, NH, T], and the gradient weight `weight`
/// (the term's weight over its normalization).
public struct AttentionTeacher {
    public let qk: UnsafePointer<Float>
    public let stride: Int
    public let lse: UnsafePointer<Float>
    public let weight: Float
    public init(qk: UnsafePointer<Float>, stride: Int, lse: UnsafePointer<Float>, weight: Float) {
        self.qk = qk; self.stride = stride; self.lse = lse; self.weight = weight
    }
}

/// Causal attention backward (no KV cache: Tq = Tk = T, offset 0), recomputing each block's
/// probabilities from `lse`. dq, dk, dv: written (this head's columns are zeroed first), with
/// dqkvStride; dout, out: the forward's output gradient and output. With a `teacher`, also adds
/// the gradient of `weight · Σ KL(P_teacher ‖ P_student)` over every head and query row (to the
/// student's scores: weight · (P_s − P_t)) and returns that sum of KLs (else 0).
@discardableResult
public func attentionBackward(dq: UnsafeMutablePointer<Float>, dk: UnsafeMutablePointer<Float>, dv: UnsafeMutablePointer<Float>,
                              dqkvStride: Int, dout: UnsafePointer<Float>, out: UnsafePointer<Float>, outStride: Int,
                              lse: UnsafePointer<Float>, q: UnsafePointer<Float>, k: UnsafePointer<Float>, v: UnsafePointer<Float>,
                              qkvStride: Int, B: Int, T: Int, NH: Int, hs: Int, teacher: AttentionTeacher? = nil) -> Double {
    let scale = 1 / Float(hs).squareRoot()
    let bq = attentionBlock, bk = attentionBlock
    return BLAS.singleThreaded { () -> Double in
        // One KL sum per (batch, head) task: no two workers write the same slot.
        withUnsafeTemporaryAllocation(of: Double.self, capacity: max(B * NH, 1)) { klParts in
        klParts.initialize(repeating: 0)
        parallelFor(B * NH) { tasks in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * bq * bk + T) { scratch in
                let p = scratch.baseAddress!, dp = p + bq * bk, pt = dp + bq * bk, rowDot = pt + bq * bk
                for task in tasks {
                    var kl = 0.0
                    let b = task / NH, h = task % NH
                    let row0 = b * T
                    let qh = q + row0 * qkvStride + h * hs, kh = k + row0 * qkvStride + h * hs, vh = v + row0 * qkvStride + h * hs
                    let dqh = dq + row0 * dqkvStride + h * hs, dkh = dk + row0 * dqkvStride + h * hs, dvh = dv + row0 * dqkvStride + h * hs
                    let doh = dout + row0 * outStride + h * hs, oh = out + row0 * outStride + h * hs
                    let lseh = lse + (b * NH + h) * T
                    for t in 0..<T {
                        // D_t = dO_t · O_t (the softmax backward's row term).
                        rowDot[t] = Float(dot8(doh + t * outStride, oh + t * outStride, count: hs))
                        (dqh + t * dqkvStride).update(repeating: 0, count: hs)
                        (dkh + t * dqkvStride).update(repeating: 0, count: hs)
                        (dvh + t * dqkvStride).update(repeating: 0, count: hs)
                    }
                    var k0 = 0
                    while k0 < T {
                        let nk = min(bk, T - k0)
                        var q0 = k0 / bq * bq   // the first query block that sees key k0
                        while q0 < T {
                            let nq = min(bq, T - q0)
                            // P [nq, nk] = exp(scale · Q Kᵀ − lse), zero above the diagonal.
                            sgemm(transB: true, m: nq, n: nk, k: hs, alpha: scale, a: qh + q0 * qkvStride, lda: qkvStride,
                                  b: kh + k0 * qkvStride, ldb: qkvStride, c: p, ldc: bk)
                            if let t = teacher {
                                kl += teacherBlock(t, into: pt, student: p, studentLSE: lseh, row0: row0, head: h, heads: NH, batch: b,
                                                   q0: q0, nq: nq, k0: k0, nk: nk, T: T, hs: hs, scale: scale)
                            }
                            for i in 0..<nq {
                                let row = p + i * bk
                                let visible = max(0, min(nk, q0 + i - k0 + 1))
                                _ = expShifted(row, row, count: visible, shift: lseh[q0 + i])
                                if visible < nk { (row + visible).update(repeating: 0, count: nk - visible) }
                            }
                            // dV_blk [nk, hs] += Pᵀ · dO_blk
                            sgemm(transA: true, m: nk, n: hs, k: nq, a: p, lda: bk, b: doh + q0 * outStride, ldb: outStride,
                                  beta: 1, c: dvh + k0 * dqkvStride, ldc: dqkvStride)
                            // dP [nq, nk] = dO_blk · V_blkᵀ
                            sgemm(transB: true, m: nq, n: nk, k: hs, a: doh + q0 * outStride, lda: outStride,
                                  b: vh + k0 * qkvStride, ldb: qkvStride, c: dp, ldc: bk)
                            scoreGradient(dp, p: p, teacher: teacher.map { (UnsafePointer(pt), $0.weight) }, rowDot: rowDot + q0, nq: nq, nk: nk, scale: scale)
                            // dQ_blk [nq, hs] += dS · K_blk ; dK_blk [nk, hs] += dSᵀ · Q_blk
                            sgemm(m: nq, n: hs, k: nk, a: dp, lda: bk, b: kh + k0 * qkvStride, ldb: qkvStride,
                                  beta: 1, c: dqh + q0 * dqkvStride, ldc: dqkvStride)
                            sgemm(transA: true, m: nk, n: hs, k: nq, a: dp, lda: bk, b: qh + q0 * qkvStride, ldb: qkvStride,
                                  beta: 1, c: dkh + k0 * dqkvStride, ldc: dqkvStride)
                            q0 += nq
                        }
                        k0 += nk
                    }
                    klParts[task] = kl
                }
            }
        }
        return klParts.reduce(0, +)
        }
    }
}

/// The teacher's attention block for the attention term: P_t [nq, nk] (row stride
/// `attentionBlock`) into `pt`, and Σ KL(P_t ‖ P_s) over the block's visible entries, computed
/// while both are still log-probabilities (`student` holds the student's scaled scores).
func teacherBlock(_ t: AttentionTeacher, into pt: UnsafeMutablePointer<Float>, student p: UnsafePointer<Float>, studentLSE lseh: UnsafePointer<Float>,
                  row0: Int, head h: Int, heads NH: Int, batch b: Int, q0: Int, nq: Int, k0: Int, nk: Int, T: Int, hs: Int, scale: Float) -> Double {
    let bk = attentionBlock
    let tq = t.qk + row0 * t.stride + h * hs, tk = tq + t.stride / 2
    sgemm(transB: true, m: nq, n: nk, k: hs, alpha: scale, a: tq + q0 * t.stride, lda: t.stride, b: tk + k0 * t.stride, ldb: t.stride, c: pt, ldc: bk)
    let tlse = t.lse + (b * NH + h) * T
    var kl = 0.0
    for i in 0..<nq {
        let sr = p + i * bk, tr = pt + i * bk
        let visible = max(0, min(nk, q0 + i - k0 + 1))
        let ls = lseh[q0 + i], lt = tlse[q0 + i]
        for j in 0..<visible {
            let logt = tr[j] - lt
            tr[j] = fastExp(logt)
            kl += Double(tr[j] * (logt - (sr[j] - ls)))
        }
        if visible < nk { (tr + visible).update(repeating: 0, count: nk - visible) }
    }
    return kl
}

/// dS = P ∘ (dP − D) · scale, written over dP [nq, nk] (row stride `attentionBlock`), plus the
/// attention term's weight · (P_s − P_t) · scale when a teacher block (P_t, weight) is given.
func scoreGradient(_ dp: UnsafeMutablePointer<Float>, p: UnsafePointer<Float>, teacher: (pt: UnsafePointer<Float>, weight: Float)?,
                   rowDot: UnsafePointer<Float>, nq: Int, nk: Int, scale: Float) {
    let bk = attentionBlock
    for i in 0..<nq {
        let pr = p + i * bk, dr = dp + i * bk, d = rowDot[i]
        for j in 0..<nk { dr[j] = pr[j] * (dr[j] - d) * scale }
        if let t = teacher {
            let tr = t.pt + i * bk, w = t.weight * scale
            for j in 0..<nk { dr[j] += w * (pr[j] - tr[j]) }
        }
    }
}
