import Foundation

/// How a stage's parameter budget is shared among its targets (`allocate`): `uniform` gives each
/// layer the same fraction of its own parameters; `sensitivity` gives ranks (low rank) or terms
/// (Kronecker) to the layers whose output error they reduce most per parameter, under the same
/// total.
public enum Allocation: String, CaseIterable, Sendable {
    case uniform, sensitivity

    /// Greedy water-filling: layer l starts at `minimum[l]` units (ranks or terms) and takes
    /// units one at a time, always the unit that removes the most error per parameter, while the
    /// total of `units · unitCost` stays within `budget` and each layer within `maximum[l]`.
    /// `gains[l][u]` is the error the (u+1)-th unit of layer l removes (σ²_{u+1} / Σσ² of its whitened
    /// spectrum), non-increasing in u, so each layer's units are taken in order and the result is
    /// optimal for the budget it spends (exactly so when the unit costs are equal).
    public static func waterFill(gains: [[Double]], unitCost: [Int], minimum: [Int], maximum: [Int], budget: Int) -> [Int] {
        var units = zip(minimum, maximum).map { min($0, $1) }
        var left = budget - zip(units, unitCost).reduce(0) { $0 + $1.0 * $1.1 }
        // Every further unit, best value per parameter first (ties: earlier layer, earlier unit).
        var offers: [(layer: Int, unit: Int, value: Double)] = []
        for l in gains.indices where unitCost[l] > 0 {
            for u in units[l]..<min(maximum[l], gains[l].count) { offers.append((l, u, max(gains[l][u], 0) / Double(unitCost[l]))) }
        }
        offers.sort { $0.value > $1.value || ($0.value == $1.value && ($0.layer, $0.unit) < ($1.layer, $1.unit)) }
        for o in offers where o.unit == units[o.layer] && unitCost[o.layer] <= left {
            units[o.layer] += 1
            left -= unitCost[o.layer]
        }
        return units
    }

    /// The largest rank of an [m, n] low-rank layer that stores no more than the dense one.
    public static func breakEvenRank(_ m: Int, _ n: Int) -> Int { max(1, min(min(m, n), m * n / (m + n))) }
}

extension FactorizationPlan {
    /// Layers grouped by shape, "[m x n]: what" per group, in model order.
    static func byShape(_ layers: [(name: String, rows: Int, cols: Int)], _ what: (Int, Int) -> String) -> String {
        var seen: [String] = [], count: [String: Int] = [:]
        for l in layers {
            let key = "\(l.rows)x\(l.cols)"
            if count[key] == nil { seen.append(key) }
            count[key, default: 0] += 1
        }
        return seen.map { key in
            let l = layers.first { "\($0.rows)x\($0.cols)" == key }!
            return "\(count[key]!) x [\(key)] \(what(l.rows, l.cols))"
        }.joined(separator: "; ")
    }

    /// How a low-rank stage gives out ranks, as far as the shapes tell before anything runs.
    static func describeAllocation(_ spec: Recipe.LowRankSpec, stage: Int, layers ls: [(name: String, rows: Int, cols: Int)]) -> [String] {
        let head = "stage \(stage + 1) lowrank\(spec.whiten ? " (whitened)" : ""): "
        let dense = ls.reduce(0) { $0 + $1.rows * $1.cols }
        switch spec.rule {
        case .budget(let f) where spec.allocate == .sensitivity:
            return [head + "budget \(f) by sensitivity over \(ls.count) layers (\(Int(f * Double(dense))) of \(dense) parameters): ranks decided at run time "
                    + "from the whitened spectra on the calibration (greedy water-filling of σ²/Σσ² per parameter, each layer between rank 1 and its break-even rank)"]
        case .energy(let e):
            return [head + "energy \(e): ranks decided at run time from each layer's \(spec.whiten ? "whitened " : "")spectrum"]
        default:
            var total = 0
            let text = byShape(ls) { m, n in
                let r = LowRank.rank(for: spec.rule, rows: m, cols: n, singularValues: [])
                return "rank \(r)"
            }
            for l in ls { total += LowRank.rank(for: spec.rule, rows: l.rows, cols: l.cols, singularValues: []) * (l.rows + l.cols) }
            return [head + "uniform: " + text + " (\(total) of \(dense) parameters)"]
        }
    }

    /// How a Kronecker stage gives out terms.
    static func describeAllocation(_ spec: Recipe.KroneckerSpec, stage: Int, layers ls: [(name: String, rows: Int, cols: Int)]) -> [String] {
        let head = "stage \(stage + 1) kronecker\(spec.whiten ? " (whitened)" : ""): ", least = spec.whiten ? "least whitened output error" : "least error"
        let dense = ls.reduce(0) { $0 + $1.rows * $1.cols }, extra = spec.scale ? 1 : 0
        switch (spec.factors, spec.terms) {
        case (let f?, let t?):
            return [head + "\(t) term(s) of [\(f.m1) x \(f.n1)] ⊗ [m/\(f.m1) x n/\(f.n1)] per layer"]
        case (nil, let t?):
            return [head + "\(t) term(s) per layer, in the factor shape of \(least) within budget \(spec.budget) (decided at run time from the weights)"]
        default:
            if spec.allocate == .sensitivity {
                return [head + "terms: auto, budget \(spec.budget) by sensitivity over \(ls.count) layers (\(Int(spec.budget * Double(dense))) of \(dense) parameters): "
                        + "each layer's shape of \(least) at its own budget, then terms decided at run time from the whitened spectra on the calibration "
                        + "(greedy water-filling of σ²/Σσ² per parameter)"]
            }
            let text = byShape(ls) { m, n in
                let most = NearestKronecker.autoCandidates(rows: m, cols: n, terms: nil, budget: Int(spec.budget * Double(m * n)), perTermExtra: extra,
                                                           maxCandidates: 1).first?.1 ?? 0
                return "up to \(most) terms"
            }
            return [head + "terms: auto, budget \(spec.budget) uniform: " + text + "; the shape (of \(least)) and its terms decided at run time from the weights"]
        }
    }
}
