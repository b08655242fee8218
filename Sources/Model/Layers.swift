import Foundation
import Tensor

// The GPT-2 layers as forward/backward pairs over raw buffers (llm.c style).
// Shapes in comments: B batch, T time, C channels, NH heads, hs = C / NH, V vocab, N = B*T rows.
// Backward functions accumulate (+=) into parameter gradients and write or accumulate input
// gradients as documented.

/// LayerNorm forward. out, inp: [N, C]; weight, bias: [C]; saves mean and rstd: [N].
public func layerNormForward(out: UnsafeMutablePointer<Float>, mean: UnsafeMutablePointer<Float>,
                             rstd: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>,
                             weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, N: Int, C: Int, eps: Float) {
    parallelFor(N, minChunk: 16) { rows in
        for i in rows {
            let x = inp + i * C
            let m = Float(sum8(x, count: C) / Double(C))
            let v = Float(squaredDeviation8(x, mean: m, count: C) / Double(C))
            let s = 1 / (v + eps).squareRoot()
            let o = out + i * C
            for c in 0..<C { o[c] = (x[c] - m) * s * weight[c] + bias[c] }
            mean[i] = m
            rstd[i] = s
        }
    }
}

/// LayerNorm backward. dinp [N, C] is accumulated (+=); dweight, dbias [C] accumulated.
public func layerNormBackward(dinp: UnsafeMutablePointer<Float>, dweight: UnsafeMutablePointer<Float>,
                              dbias: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, inp: UnsafePointer<Float>,
                              weight: UnsafePointer<Float>, mean: UnsafePointer<Float>, rstd: UnsafePointer<Float>,
                              N: Int, C: Int) {
    // Input gradients in parallel over rows; weight/bias gradients per-thread then summed.
    let workers = loopWorkers(N, minChunk: 16)
    var partial = [Float](repeating: 0, count: workers * 2 * C)
    partial.withUnsafeMutableBufferPointer { pp in
        let base = pp.baseAddress!
        parallelFor(workers) { ws in
            for w in ws {
                let dw = base + w * 2 * C, db = dw + C
                let lo = N * w / workers, hi = N * (w + 1) / workers
                for i in lo..<hi {
                    let x = inp + i * C, dy = dout + i * C, dx = dinp + i * C
                    let m = mean[i], s = rstd[i]
                    var dnormMean: Float = 0, dnormNormMean: Float = 0
                    for c in 0..<C {
                        let norm = (x[c] - m) * s
                        let dnorm = weight[c] * dy[c]
                        dnormMean += dnorm
                        dnormNormMean += dnorm * norm
                        db[c] += dy[c]
                        dw[c] += norm * dy[c]
                    }
                    dnormMean /= Float(C)
                    dnormNormMean /= Float(C)
                    for c in 0..<C {
                        let norm = (x[c] - m) * s
                        let dnorm = weight[c] * dy[c]
                        dx[c] += (dnorm - dnormMean - norm * dnormNormMean) * s
                    }
                }
            }
        }
        for w in 0..<workers {
            let dw = base + w * 2 * C, db = dw + C
            for c in 0..<C { dweight[c] += dw[c]; dbias[c] += db[c] }
        }
    }
}

let geluScale = Float((2.0 / Double.pi).squareRoot())

/// GELU, tanh approximation ("gelu_new"). out, inp: [count].
public func geluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
    let k = geluScale
    parallelFor(count, minChunk: 4096) { r in
        for i in r {
            let x = inp[i]
            out[i] = 0.5 * x * (1 + fastTanh(k * (x + 0.044715 * x * x * x)))
        }
    }
}

/// GELU backward: dinp = gelu'(inp) * dout (written, not accumulated).
public func geluBackward(dinp: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, dout: UnsafePointer<Float>, count: Int) {
    let k = geluScale
    parallelFor(count, minChunk: 4096) { r in
        for i in r {
            let x = inp[i]
            let x2 = x * x
            let t = fastTanh(k * (x + 0.044715 * x2 * x))
            let local = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 0.134145 * x2)
            dinp[i] = local * dout[i]
        }
    }
}

/// out = a + b elementwise.
public func residualForward(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minChunk: 8192) { r in for i in r { out[i] = a[i] + b[i] } }
}

/// dst += src elementwise.
public func accumulate(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minChunk: 8192) { r in for i in r { dst[i] += src[i] } }
}

/// Token + position embedding. out: [B, T, C]; ids: [B, T]; wte: [V, C] rows; wpe: [maxT, C].
/// `tokenRow(id, dst)` writes the token embedding (dense lookup or a factored one).
public func embeddingForward(out: UnsafeMutablePointer<Float>, ids: [Int32], B: Int, T: Int, C: Int,
                             wpe: UnsafePointer<Float>, positionOffset: Int = 0,
                             tokenRow: (Int, UnsafeMutablePointer<Float>) -> Void) {
    for b in 0..<B {
        for t in 0..<T {
            let o = out + (b * T + t) * C
            tokenRow(Int(ids[b * T + t]), o)
            let p = wpe + (t + positionOffset) * C
            for c in 0..<C { o[c] += p[c] }
        }
    }
}

/// Causal self-attention forward, all heads.
/// qkv: [B, T, 3C] (q | k | v); out: [B, T, C]; att (saved probabilities): [B, NH, T, T].
public func attentionForward(out: UnsafeMutablePointer<Float>, att: UnsafeMutablePointer<Float>,
                             qkv: UnsafePointer<Float>, B: Int, T: Int, C: Int, NH: Int) {
    let hs = C / NH
    let scale = 1 / Float(hs).squareRoot()
    for b in 0..<B {
        for h in 0..<NH {
            let q = qkv + b * T * 3 * C + h * hs
            let k = q + C
            let p = att + (b * NH + h) * T * T
            // scores [T, T] = scale * q [T, hs] · kᵀ
            sgemm(transB: true, m: T, n: T, k: hs, alpha: scale, a: q, lda: 3 * C, b: k, ldb: 3 * C, c: p, ldc: T)
        }
    }
    // Masked softmax, rows in parallel.
    parallelFor(B * NH * T, minChunk: 64) { rows in
        for r in rows {
            let t = r % T
            let row = att + r * T
            let mx = maxValue(row, count: t + 1)
            Model.scale(row, count: t + 1, by: Float(1 / expShifted(row, row, count: t + 1, shift: mx)))
            for j in (t + 1)..<T { row[j] = 0 }
        }
    }
    for b in 0..<B {
        for h in 0..<NH {
            let v = qkv + b * T * 3 * C + 2 * C + h * hs
            let p = att + (b * NH + h) * T * T
            // y [T, hs] = P [T, T] · v [T, hs]
            sgemm(m: T, n: hs, k: T, a: p, lda: T, b: v, ldb: 3 * C, c: out + b * T * C + h * hs, ldc: C)
        }
    }
}

/// Causal self-attention backward. dqkv: [B, T, 3C] (written); dout: [B, T, C];
/// scratch: [B, NH, T, T] (overwritten).
public func attentionBackward(dqkv: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                              dout: UnsafePointer<Float>, qkv: UnsafePointer<Float>, att: UnsafePointer<Float>,
                              B: Int, T: Int, C: Int, NH: Int) {
    let hs = C / NH
    let scale = 1 / Float(hs).squareRoot()
    for b in 0..<B {
        for h in 0..<NH {
            let v = qkv + b * T * 3 * C + 2 * C + h * hs
            let p = att + (b * NH + h) * T * T
            let dp = scratch + (b * NH + h) * T * T
            let dy = dout + b * T * C + h * hs
            // dP [T, T] = dY [T, hs] · vᵀ
            sgemm(transB: true, m: T, n: T, k: hs, a: dy, lda: C, b: v, ldb: 3 * C, c: dp, ldc: T)
            // dV [T, hs] = Pᵀ · dY
            sgemm(transA: true, m: T, n: hs, k: T, a: p, lda: T, b: dy, ldb: C,
                  c: dqkv + b * T * 3 * C + 2 * C + h * hs, ldc: 3 * C)
        }
    }
    // Softmax backward: dS_ij = P_ij (dP_ij - Σ_k P_ik dP_ik), then the 1/sqrt(hs) scale.
    parallelFor(B * NH * T, minChunk: 64) { rows in
        for r in rows {
            let t = r % T
            let p = att + r * T, d = scratch + r * T
            let dot = Float(dot8(p, d, count: t + 1))
            for j in 0...t { d[j] = p[j] * (d[j] - dot) * scale }
            for j in (t + 1)..<T { d[j] = 0 }
        }
    }
    for b in 0..<B {
        for h in 0..<NH {
            let q = qkv + b * T * 3 * C + h * hs
            let k = q + C
            let ds = scratch + (b * NH + h) * T * T
            // dQ [T, hs] = dS · k ; dK [T, hs] = dSᵀ · q
            sgemm(m: T, n: hs, k: T, a: ds, lda: T, b: k, ldb: 3 * C, c: dqkv + b * T * 3 * C + h * hs, ldc: 3 * C)
            sgemm(transA: true, m: T, n: hs, k: T, a: ds, lda: T, b: q, ldb: 3 * C,
                  c: dqkv + b * T * 3 * C + C + h * hs, ldc: 3 * C)
        }
    }
}

/// Softmax cross-entropy over rows of logits [N, V] against `targets` [N] (a negative target
/// is ignored). Writes per-row losses (0 for ignored rows) and, if `dlogits` is given,
/// `scale * (softmax - onehot)` for scored rows and 0 for ignored rows.
public func crossEntropyForwardBackward(losses: UnsafeMutablePointer<Float>, dlogits: UnsafeMutablePointer<Float>?,
                                        logits: UnsafePointer<Float>, targets: [Int32], N: Int, V: Int, scale: Float) {
    targets.withUnsafeBufferPointer { tg in
        parallelFor(N) { rows in
            for i in rows {
                let z = logits + i * V
                let y = Int(tg[i])
                guard y >= 0 else {
                    losses[i] = 0
                    if let dlogits { (dlogits + i * V).update(repeating: 0, count: V) }
                    continue
                }
                let mx = maxValue(z, count: V)
                if let dlogits {
                    // exp(z - max) lands in dlogits, then becomes softmax * scale.
                    let d = dlogits + i * V
                    let sum = expShifted(z, d, count: V, shift: mx)
                    losses[i] = Float(log(sum)) + mx - z[y]
                    Model.scale(d, count: V, by: Float(Double(scale) / sum))
                    d[y] -= scale
                } else {
                    losses[i] = Float(log(sumExpShifted(z, count: V, shift: mx))) + mx - z[y]
                }
            }
        }
    }
}
