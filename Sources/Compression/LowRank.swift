import Foundation
import Model
import Tensor

/// Truncated-SVD factorization `W ≈ W0 W1ᵀ` with `W0 = U_r sqrt(Σ_r)` `[in, r]` and
/// `W1 = V_r sqrt(Σ_r)` `[out, r]`; by Eckart–Young its Frobenius error is `sqrt(Σ_{i>r} σ_i²)`,
/// the least of any rank-r matrix.
public enum LowRank {
    /// How the rank is chosen.
    public enum RankRule: Equatable, Sendable {
        /// r = round(ratio · min(in, out)).
        case ratio(Double)
        /// Smallest r keeping this fraction of Σσ².
        case energy(Double)
        /// Largest r with r (in + out) ≤ fraction · in · out.
        case budget(Double)
        /// An explicit rank.
        case rank(Int)
    }

    /// Whether the rule needs the singular values (energy does; the others only need the shape).
    public static func needsSpectrum(_ rule: RankRule) -> Bool {
        if case .energy = rule { return true }
        return false
    }

    /// The rank a rule gives for a matrix with these singular values.
    public static func rank(for rule: RankRule, rows: Int, cols: Int, singularValues: [Double]) -> Int {
        let full = min(rows, cols)
        let r: Int
        switch rule {
        case .ratio(let x): r = Int((x * Double(full)).rounded())
        case .energy(let e):
            let total = singularValues.reduce(0) { $0 + $1 * $1 }
            var acc = 0.0, k = 0
            while k < singularValues.count && acc < e * total { acc += singularValues[k] * singularValues[k]; k += 1 }
            r = k
        case .budget(let f): r = Int((f * Double(rows * cols) / Double(rows + cols)).rounded(.down))
        case .rank(let k): r = k
        }
        return min(max(r, 1), full)
    }

    /// Factors and error of the rank-r truncation (LAPACK SVD; randomized when r is small).
    /// The error is the tail of the full spectrum when it was computed, else
    /// sqrt(‖W‖_F² − Σ_{i≤r} σ_i²) (the same number, by orthogonality).
    public static func factorize(_ w: Tensor, rank r: Int, randomizedBelow: Double = 0.05, seed: UInt64 = 0) throws -> (w0: Tensor, w1: Tensor, error: Double) {
        let m = w.shape[0], n = w.shape[1]
        guard r >= 1 && r <= min(m, n) else { throw CompressionError.value("lowrank.rank", "must be between 1 and \(min(m, n)), got \(r)") }
        let randomized = Double(r) < randomizedBelow * Double(min(m, n)) && min(m, n) > 64
        // A tall row-major matrix goes through LAPACK's QR path (about 3x faster than its LQ path).
        let full = randomized ? nil : try (m > n ? w.svdColumnMajor() : w.svd())
        let svd = try full?.truncated(to: r) ?? w.randomizedSVD(rank: r, seed: seed)
        let f = svd.balancedFactors(rank: r)
        return (f.left, f.right, truncationError(frobenius: w, kept: svd.S, all: full?.S))
    }

    /// The ranks of a progressive schedule: `stages` steps from the full rank down to `target`
    /// (linear in rank; the last is `target`).
    public static func progressiveRanks(full: Int, target: Int, stages: Int) -> [Int] {
        guard stages > 1 else { return [target] }
        return (1...stages).map { k in Int((Double(full) + Double(target - full) * Double(k) / Double(stages)).rounded()) }
    }
}

/// Frobenius error of keeping the singular values `kept`: the tail of `all` when the full
/// spectrum is known, else sqrt(max(‖W‖_F² − Σ kept², 0)) in Double.
func truncationError(frobenius w: Tensor, kept: [Float], all: [Float]?) -> Double {
    if let all { return all.dropFirst(kept.count).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() }
    var total = 0.0
    for x in w.data { total += Double(x) * Double(x) }
    let top = kept.reduce(0.0) { $0 + Double($1) * Double($1) }
    return max(total - top, 0).squareRoot()
}
