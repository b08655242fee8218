/// AdamW's update of `count` parameters (torch.optim.AdamW): decoupled weight decay
/// `p *= decay` (decay = 1 − lr·wd, or 1), then the Adam step with bias correction
/// (`stepSize` = lr / (1 − β1^t), `bc2Sqrt` = √(1 − β2^t)).
public func adamwStep(values: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                      v: UnsafeMutablePointer<Float>, count: Int, stepSize: Float, decay: Float,
                      beta1 b1: Float, beta2 b2: Float, eps e: Float, bc2Sqrt: Float) {
    parallelFor(count, minChunk: 16384) { r in
        for j in r {
            let g = grads[j]
            values[j] *= decay
            m[j] = b1 * m[j] + (1 - b1) * g
            v[j] = b2 * v[j] + (1 - b2) * g * g
            let denom = v[j].squareRoot() / bc2Sqrt + e
            values[j] -= stepSize * m[j] / denom
        }
    }
}

/// Σ x[i]² over a long buffer (gradient norms): Float lanes within blocks of 4096, Double across.
public func sumOfSquares(_ x: UnsafePointer<Float>, count n: Int) -> Double {
    var total = 0.0
    var i = 0
    while i < n {
        let m = min(4096, n - i)
        total += dot8(x + i, x + i, count: m)
        i += m
    }
    return total
}
