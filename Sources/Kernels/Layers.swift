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

/// GELU, tanh approximation ("gelu_new"). out, inp: [count]; `out` may be `inp`.
public func geluForward(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, count: Int) {
    let k = geluScale
    parallelFor(count, minChunk: 4096) { r in
        simdMap(out: out, inp: inp, range: r) { x in
            0.5 * x * (1 + fastTanh(k * (x + 0.044715 * x * x * x)))
        }
    }
}

/// GELU backward: dinp = gelu'(inp) * dout (written, not accumulated); `dinp` may be `dout`.
public func geluBackward(dinp: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, dout: UnsafePointer<Float>, count: Int) {
    let k = geluScale
    @inline(__always) func local(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let x2: SIMD8<Float> = x * x
        let u: SIMD8<Float> = k * (x + 0.044715 * x2 * x)
        let t: SIMD8<Float> = fastTanh(u)
        let outer: SIMD8<Float> = 0.5 * (1 + t)
        let inner: SIMD8<Float> = 0.5 * x * (1 - t * t) * k * (1 + 0.134145 * x2)
        return outer + inner
    }
    parallelFor(count, minChunk: 4096) { r in
        simdMap(out: dinp, inp, dout, range: r) { x, d in local(x) * d }
    }
}

/// out = a + b elementwise.
public func residualForward(out: UnsafeMutablePointer<Float>, a: UnsafePointer<Float>, b: UnsafePointer<Float>, count: Int) {
    parallelFor(count, minChunk: 8192) { r in for i in r { out[i] = a[i] + b[i] } }
}

/// Adds position embeddings: out [B, T, C] += wpe [offset + t] for each position t.
public func addPositionEmbeddings(out: UnsafeMutablePointer<Float>, B: Int, T: Int, C: Int, wpe: UnsafePointer<Float>, positionOffset: Int = 0) {
    parallelFor(B * T, minChunk: 64) { rows in
        for i in rows {
            let o = out + i * C, p = wpe + (i % T + positionOffset) * C
            for c in 0..<C { o[c] += p[c] }
        }
    }
}

/// Backward of `addPositionEmbeddings` (offset 0): dwpe [t] += dout [b, t] for every b, in batch order.
public func addPositionEmbeddingGradients(dwpe: UnsafeMutablePointer<Float>, dout: UnsafePointer<Float>, B: Int, T: Int, C: Int) {
    parallelFor(T, minChunk: 16) { ts in
        for t in ts {
            let g = dwpe + t * C
            for b in 0..<B {
                let d = dout + (b * T + t) * C
                for c in 0..<C { g[c] += d[c] }
            }
        }
    }
}
