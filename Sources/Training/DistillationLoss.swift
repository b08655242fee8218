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
                            // Cross-entropy part.
                            var mx = -Float.infinity
                            for j in 0..<V { mx = max(mx, zs[j]) }
                            var sum = 0.0
                            for j in 0..<V { sum += Double(expf(zs[j] - mx)) }
                            let lse = Float(log(sum)) + mx
                            ceSum += Double(lse - zs[y])
                            let ceWeight = useKD ? 1 - alpha : 1
                            if let d {
                                for j in 0..<V { d[j] = ceWeight * expf(zs[j] - lse) * scale }
                                d[y] -= ceWeight * scale
                            }
                            guard useKD, let teacher else { continue }
                            // KD part at temperature T: KL(p_t ‖ p_s), gradient α T (p_s − p_t).
                            let zt = teacher + i * V
                            var ms = -Float.infinity, mt = -Float.infinity
                            for j in 0..<V { ms = max(ms, zs[j]); mt = max(mt, zt[j]) }
                            var ss = 0.0, st = 0.0
                            for j in 0..<V { ss += Double(expf((zs[j] - ms) / T)); st += Double(expf((zt[j] - mt) / T)) }
                            let lses = Float(log(ss)), lset = Float(log(st))
                            var kl = 0.0
                            let g = alpha * T * scale
                            for j in 0..<V {
                                let logps = (zs[j] - ms) / T - lses
                                let logpt = (zt[j] - mt) / T - lset
                                let pt = expf(logpt)
                                kl += Double(pt * (logpt - logps))
                                if let d { d[j] += g * (expf(logps) - pt) }
                            }
                            kdSum += Double(alpha * T * T) * kl
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
    /// Worker count for our own parallel loops (the rank's core share).
    public static var threadsForLoops: Int { threads }
}
