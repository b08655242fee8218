import Foundation
import Model
import Tensor

/// Knowledge-distillation loss over rows of logits `[N, V]`:
/// `L = α T² KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α) CE(z_s, y)`.
///
/// Returns the *sums* over scored rows of the KD term (α T² KL) and of CE, so that ranks can add
/// them; writes `dlogits = scale · ∂L/∂z_s` where `scale` is 1 / (global number of scored rows).
/// With `teacher == nil` (or α = 0) it is plain cross-entropy. A negative target skips the row.
public func distillationLoss(student: UnsafePointer<Float>, teacher: UnsafePointer<Float>?, targets: [Int32],
                             N: Int, V: Int, temperature T: Float, alpha: Float, scale: Float,
                             dlogits: UnsafeMutablePointer<Float>?) -> (kd: Double, ce: Double) {
    let useKD = teacher != nil && alpha > 0
    let workers = max(1, min(BLAS.threadsForLoops, N))
    var kdParts = [Double](repeating: 0, count: workers), ceParts = [Double](repeating: 0, count: workers)
    targets.withUnsafeBufferPointer { tg in
        kdParts.withUnsafeMutableBufferPointer { kdp in
            ceParts.withUnsafeMutableBufferPointer { cep in
                parallelFor(workers) { ws in
                    for w in ws {
                        var kdSum = 0.0, ceSum = 0.0
                        for i in share(N, rank: w, size: workers) {
                            let y = Int(tg[i])
                            let zs = student + i * V
                            let d = dlogits.map { $0 + i * V }
                            guard y >= 0 else { d?.update(repeating: 0, count: V); continue }
                            // Cross-entropy part: exp(z − max) goes to d, then becomes the softmax.
                            let ceWeight = useKD ? 1 - alpha : 1
                            let ms = maxValue(zs, count: V)
                            let lse: Float
                            if let d {
                                let sum = expShifted(zs, d, count: V, shift: ms)
                                lse = Float(log(sum)) + ms
                                Model.scale(d, count: V, by: Float(Double(ceWeight * scale) / sum))
                                d[y] -= ceWeight * scale
                            } else {
                                lse = Float(log(sumExpShifted(zs, count: V, shift: ms))) + ms
                            }
                            ceSum += Double(lse - zs[y])
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
                        kdp[w] = kdSum
                        cep[w] = ceSum
                    }
                }
            }
        }
    }
    return (kdParts.reduce(0, +), ceParts.reduce(0, +))
}

extension BLAS {
    /// Worker count for our own parallel loops (the rank's core share): `parallelFor`'s.
    public static var threadsForLoops: Int { loopThreads }
}

/// KL(p_t ‖ p_s) of one row at temperature 1/invT given both log-sum-exps; adds
/// `gradScale · (p_s − p_t)` to `grad` when given. Works in blocks through stack buffers so the
/// exp and product loops vectorise.
@inline(__always)
func klDivergence(zs: UnsafePointer<Float>, zt: UnsafePointer<Float>, V: Int, ms: Float, mt: Float, invT: Float,
                  lses: Float, lset: Float, grad: UnsafeMutablePointer<Float>?, gradScale: Float) -> Double {
    let cs = -ms * invT - lses, ct = -mt * invT - lset
    return withUnsafeTemporaryAllocation(of: Float.self, capacity: 3 * 1024) { buf in
        let logpt = buf.baseAddress!, pt = logpt + 1024, term = pt + 1024
        var kl = 0.0
        var i = 0
        while i < V {
            let n = min(1024, V - i)
            let s = zs + i, t = zt + i
            for j in 0..<n { logpt[j] = t[j] * invT + ct }
            for j in 0..<n { pt[j] = fastExp(logpt[j]) }
            for j in 0..<n { term[j] = pt[j] * (logpt[j] - (s[j] * invT + cs)) }
            kl += sum8(term, count: n)
            if let grad {
                let g = grad + i
                for j in 0..<n { g[j] += gradScale * (fastExp(s[j] * invT + cs) - pt[j]) }
            }
            i += n
        }
        return kl
    }
}
