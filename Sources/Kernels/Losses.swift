import Foundation
import Tensor

/// Knowledge-distillation loss over rows of logits `[N, V]`:
/// `L = α T² KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) CE(z_s, y)`.
///
/// Returns the *sums* over scored rows of the KD term (α T² KL) and of CE, so that ranks and row
/// chunks can add them; writes `dlogits = scale · ∂L/∂z_s` where `scale` is 1 / (global number of
/// scored rows), and each row's cross-entropy into `rowLosses` (0 for ignored rows). With
/// `teacher == nil` (or α = 0) it is plain cross-entropy. A negative target skips the row.
public func distillationLoss(student: UnsafePointer<Float>, teacher: UnsafePointer<Float>?, targets: UnsafePointer<Int32>,
                             N: Int, V: Int, temperature T: Float, alpha: Float, scale: Float,
                             dlogits: UnsafeMutablePointer<Float>?, rowLosses: UnsafeMutablePointer<Float>? = nil) -> (kd: Double, ce: Double) {
    let useKD = teacher != nil && alpha > 0
    let workers = max(1, min(loopThreads, N))
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: 2 * workers) { parts in
        parts.initialize(repeating: 0)
        parallelFor(workers) { ws in
            for w in ws {
                var kdSum = 0.0, ceSum = 0.0
                for i in (N * w / workers)..<(N * (w + 1) / workers) {
                    let y = Int(targets[i])
                    let zs = student + i * V
                    let d = dlogits.map { $0 + i * V }
                    rowLosses?[i] = 0
                    guard y >= 0 else { d?.update(repeating: 0, count: V); continue }
                    // Cross-entropy part: exp(z − max) goes to d, then becomes the softmax.
                    let ceWeight = useKD ? 1 - alpha : 1
                    let ms = maxValue(zs, count: V)
                    let lse: Float
                    if let d {
                        let sum = expShifted(zs, d, count: V, shift: ms)
                        lse = Float(log(sum)) + ms
                        Kernels.scale(d, count: V, by: Float(Double(ceWeight * scale) / sum))
                        d[y] -= ceWeight * scale
                    } else {
                        lse = Float(log(sumExpShifted(zs, count: V, shift: ms))) + ms
                    }
                    let ce = lse - zs[y]
                    rowLosses?[i] = ce
                    ceSum += Double(ce)
                    guard useKD, let teacher else { continue }
                    // KD part at temperature T: KL(p_t ‖ p_s), gradient α T (p_s − p_t).
                    let zt = teacher + i * V
                    let mt = maxValue(zt, count: V)
                    let invT = 1 / T
                    let lses = Float(log(sumExpShifted(zs, count: V, shift: ms, scale: invT)))
                    let lset = Float(log(sumExpShifted(zt, count: V, shift: mt, scale: invT)))
                    kdSum += Double(alpha * T * T) * klDivergence(zs: zs, zt: zt, V: V, ms: ms, mt: mt, invT: invT,
                                                                   lses: lses, lset: lset, grad: d, gradScale: alpha * T * scale)
                }
                parts[2 * w] = kdSum
                parts[2 * w + 1] = ceSum
            }
        }
        var kd = 0.0, ce = 0.0
        for w in 0..<workers { kd += parts[2 * w]; ce += parts[2 * w + 1] }
        return (kd, ce)
    }
}

/// KL(p_t ‖ p_s) of one row at temperature 1/invT given both log-sum-exps of the shifted, scaled
/// logits (log p = (z − max)/T − lse, which stays exact for huge logits); adds
/// `gradScale · (p_s − p_t)` to `grad` when given. Works in blocks through stack buffers so the
/// exp and product loops vectorize.
@inline(__always)
func klDivergence(zs: UnsafePointer<Float>, zt: UnsafePointer<Float>, V: Int, ms: Float, mt: Float, invT: Float,
                  lses: Float, lset: Float, grad: UnsafeMutablePointer<Float>?, gradScale: Float) -> Double {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * 1024) { buf in
        let logpt = buf.baseAddress!, pt = logpt + 1024, term = pt + 1024
        var kl = 0.0
        var i = 0
        while i < V {
            let n = min(1024, V - i)
            let s = zs + i, t = zt + i
            for j in 0..<n { logpt[j] = (t[j] - mt) * invT - lset }
            for j in 0..<n { pt[j] = fastExp(logpt[j]) }
            for j in 0..<n { term[j] = pt[j] * (logpt[j] - ((s[j] - ms) * invT - lses)) }
            kl += sum8(term, count: n)
            if let grad {
                let g = grad + i
                for j in 0..<n { g[j] += gradScale * (fastExp((s[j] - ms) * invT - lses) - pt[j]) }
            }
            i += n
        }
        return kl
    }
}
