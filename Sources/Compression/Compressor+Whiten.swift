import Distributed
import Foundation
import Model
import MPI
import Tensor

/// Whitened (data-aware) low rank and Kronecker on the shared calibration (`calibrate`): block by
/// block, each targeted linear is factorized against its inputs' XᵀX (summed over ranks), the
/// per-layer solves spread over ranks by cost (`distributedCompute`), and the block's new forms are
/// installed before the windows move on through it. With `allocate: sensitivity` a first pass
/// over the uncompressed model measures every target's whitened spectrum and
/// `Allocation.waterFill` shares the stage's budget before the factorizing pass.
extension Compressor {
    // MARK: - Whitened low rank

    /// `Whitening.lowRank` of each target on the calibration; ranks by the spec's rule on the
    /// whitened spectrum, or by the sensitivity allocation.
    func whitenedLowRank(_ spec: Recipe.LowRankSpec, names: [String], stage: Int, at: String) throws -> [LayerReport] {
        try checkWhitenable(names, at: at)
        let before = names.map { state($0) }
        let model = self.model, seed = self.seed
        var ranks: [String: Int]?
        if spec.allocate == .sensitivity, case .budget(let f) = spec.rule {
            ranks = try lowRankAllocation(names, fraction: f, percdamp: spec.percdamp, at: at)
        }
        var outputError: [String: Double] = [:]
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.whitenedLowRankUnits($0.inFeatures, $0.outFeatures) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j], (m, n) = (lin.inFeatures, lin.outFeatures)
                let l = try Whitening.cholesky(Whitening.damped(grams[lin.name]!, n: m, percdamp: spec.percdamp), n: m, what: "\(lin.name) (\(at))")
                let r = try Whitening.lowRank(lin.denseWeight(params: model.params), cholesky: l) { sigma in
                    ranks?[lin.name] ?? LowRank.rank(for: spec.rule, rows: m, cols: n, singularValues: sigma)
                }
                // Installed as the balanced split of Ŵ's own SVD (the same product): L⁻ᵀU√Σ and V√Σ
                // differ in scale by about ‖X‖ (W0's columns ~0.07, W1's ~10 on the bundled model),
                // which AdamW cannot distil from (test perplexity 172 after 40 steps, against 122.8
                // for plain low rank).
                let f = try LowRank.factorize(try r.w0.matmul(r.w1, transposeOther: true), rank: r.w0.shape[1], seed: seed)
                return [f.w0, f.w1, try Tensor(shape: [1], data: [Float(r.total > 0 ? r.error / r.total : 0)])]
            }
            var tensors: [String: Tensor] = [:]
            for (lin, r) in zip(layers, results) {
                tensors.merge(try install(lin.name, factors: [r[0], r[1]], weight: lin.denseWeight(params: model.params), sparseResidual: spec.sparseResidual),
                              uniquingKeysWith: { $1 })
                outputError[lin.name] = Double(r[2].data[0])
            }
            try model.rebuildParameters(from: tensors)
        }
        return names.enumerated().map { k, n in
            let rank = (layer(n).components.first as? RankedForm)?.rank ?? 0
            let label = "lowrank r=\(rank) whitened" + (spec.sparseResidual.map { " + \(String(format: "%.1f", $0 * 100))% sparse" } ?? "")
                + (spec.allocate == .sensitivity ? " by sensitivity" : "") + String(format: " (output error %.4f)", outputError[n] ?? 0)
            return report(stage: stage, n, label, before: before[k])
        }
    }

    /// Ranks for `budget: fraction` shared by sensitivity: the whitened spectra of the targets on
    /// the uncompressed model (a calibration pass that changes nothing), then water-filling of
    /// σ_i² / Σσ² (the relative output error rank i saves; absolute σ² favoured the layers with
    /// the largest outputs and measured worse) per parameter (a rank of an [m, n] layer costs
    /// m + n) within Σ fraction · m · n, each layer between rank 1 and the rank where it would
    /// store more than its dense weight.
    func lowRankAllocation(_ names: [String], fraction: Double, percdamp: Double, at: String) throws -> [String: Int] {
        let model = self.model
        var spectra: [String: [Double]] = [:]
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.whitenedLowRankUnits($0.inFeatures, $0.outFeatures) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j], m = lin.inFeatures
                let l = try Whitening.cholesky(Whitening.damped(grams[lin.name]!, n: m, percdamp: percdamp), n: m, what: "\(lin.name) (\(at))")
                let s = try Whitening.spectrum(lin.denseWeight(params: model.params), cholesky: l)
                let total = s.reduce(0.0) { $0 + $1 * $1 }
                return [try Tensor(shape: [s.count], data: s.map { Float(total > 0 ? $0 * $0 / total : 0) })]
            }
            for (lin, r) in zip(layers, results) { spectra[lin.name] = r[0].data.map(Double.init) }
        }
        let shapes = names.map { (layer($0).inFeatures, layer($0).outFeatures) }
        let units = Allocation.waterFill(gains: names.map { spectra[$0]! }, unitCost: shapes.map { $0.0 + $0.1 },
                                         minimum: names.map { _ in 1 }, maximum: shapes.map { Allocation.breakEvenRank($0.0, $0.1) },
                                         budget: shapes.reduce(0) { $0 + Int(fraction * Double($1.0 * $1.1)) })
        return Dictionary(uniqueKeysWithValues: zip(names, units))
    }

    /// Whitening needs each target's inputs: block linears, not yet Kronecker-factored.
    func checkWhitenable(_ names: [String], at: String) throws {
        for n in names {
            let l = layer(n)
            guard l.multipliesActivations else { throw CompressionError.layer(n, "is a lookup table; whiten needs a block linear's inputs (\(at))") }
            if l.single is FactorizedForm { throw CompressionError.layer(n, "is \(l.summary); whiten applies to dense, sparse or low-rank layers (\(at))") }
        }
    }

    // MARK: - Whitened Kronecker

    /// `WhitenedKronecker` on each target: the shape (for `factors: auto` or `terms: auto`) whose
    /// whitened nearest Kronecker sum has the least output error among the plain method's
    /// candidates, `als` sweeps, norm-matched scales when `spec.scale`.
    func whitenedKronecker(_ spec: Recipe.KroneckerSpec, names: [String], stage: Int, at: String) throws -> [LayerReport] {
        try checkWhitenable(names, at: at)
        let lins = names.map { layer($0) }
        let model = self.model, seed = self.seed
        let before = names.map { state($0) }
        let plan = spec.allocate == .sensitivity && spec.terms == nil ? try kroneckerAllocation(spec, names: names, at: at) : [:]
        var outputError: [String: (Double, Double)] = [:]
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.whitenedKroneckerUnits($0.inFeatures, $0.outFeatures, als: spec.als) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j], w = lin.denseWeight(params: model.params)
                let h = Whitening.damped(grams[lin.name]!, n: lin.inFeatures, percdamp: spec.percdamp)
                let problem: WhitenedKronecker.Problem, terms: Int
                if let (s, k) = plan[lin.name] {
                    (problem, terms) = (try WhitenedKronecker.Problem(w, gram: h, shape: s, percdamp: spec.percdamp, seed: seed), k)
                } else {
                    (problem, terms) = try WhitenedKronecker.leastError(w, gram: h, kroneckerCandidates(spec, lin), percdamp: spec.percdamp, seed: seed)
                }
                let r = try WhitenedKronecker.factorize(problem, terms: terms, sweeps: spec.als)
                let total = Whitening.quadratic(w.data.map(Double.init), h, rows: w.shape[0], cols: w.shape[1])
                let rel = r.errors.map { Float(total > 0 ? ($0 / total).squareRoot() : 0) }
                return r.a + r.b + [try Tensor(shape: [3], data: [Self.normMatchedScale(w, a: r.a, b: r.b, scaled: spec.scale), rel.first!, rel.last!])]
            }
            for (lin, r) in zip(layers, results) { outputError[lin.name] = (Double(r.last!.data[1]), Double(r.last!.data[2])) }
            try installKronecker(layers, results, scaled: spec.scale)
        }
        return names.enumerated().map { k, n in
            let e = outputError[n] ?? (0, 0)
            let label = lins[k].summary + " whitened" + (spec.allocate == .sensitivity ? " by sensitivity" : "")
                + String(format: " (output error %.4f, %.4f after %d ALS)", e.0, e.1, spec.als)
            return report(stage: stage, n, label, before: before[k])
        }
    }

    /// The (shape, terms) candidates of a layer, as the plain method compares them: the given
    /// factors, or `NearestKronecker.autoCandidates` within the budget.
    func kroneckerCandidates(_ spec: Recipe.KroneckerSpec, _ lin: WeightedLayer) -> [(KroneckerShape, Int)] {
        let (m, n) = (lin.inFeatures, lin.outFeatures), extra = spec.scale ? 1 : 0
        let allowed = Int(spec.budget * Double(m * n))
        if let f = spec.factors, let t = spec.terms { return [(KroneckerShape(m1: f.m1, n1: f.n1, m2: m / f.m1, n2: n / f.n1), t)] }
        if let t = spec.terms { return NearestKronecker.autoCandidates(rows: m, cols: n, terms: t, budget: allowed - t * extra, perTermExtra: 0, maxCandidates: 8) }
        return NearestKronecker.autoCandidates(rows: m, cols: n, terms: nil, budget: allowed, perTermExtra: extra, maxCandidates: 12)
    }

    /// `terms: auto` shared by sensitivity: on the uncompressed model, each layer's shape of least
    /// whitened error at its uniform budget and the whitened spectrum of R(W̃) in that shape; then
    /// water-filling of σ_i² / Σσ² per parameter (a term costs m1·n1 + m2·n2, plus its scale) within
    /// Σ budget · m · n, each layer between 1 term and min(m1·n1, m2·n2) or its dense size.
    func kroneckerAllocation(_ spec: Recipe.KroneckerSpec, names: [String], at: String) throws -> [String: (KroneckerShape, Int)] {
        let model = self.model, seed = self.seed
        var found: [String: (KroneckerShape, [Double])] = [:]
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.whitenedKroneckerUnits($0.inFeatures, $0.outFeatures, als: 0) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j], w = lin.denseWeight(params: model.params)
                let h = Whitening.damped(grams[lin.name]!, n: lin.inFeatures, percdamp: spec.percdamp)
                let best = try WhitenedKronecker.leastError(w, gram: h, kroneckerCandidates(spec, lin), percdamp: spec.percdamp, seed: seed)
                let s = best.problem.shape, sigma = try best.problem.spectrum(), total = sigma.reduce(0.0) { $0 + $1 * $1 }
                return [try Tensor(shape: [4], data: [s.m1, s.n1, s.m2, s.n2].map(Float.init)),
                        try Tensor(shape: [sigma.count], data: sigma.map { Float(total > 0 ? $0 * $0 / total : 0) })]
            }
            for (lin, r) in zip(layers, results) {
                let d = r[0].data.map { Int($0) }
                found[lin.name] = (KroneckerShape(m1: d[0], n1: d[1], m2: d[2], n2: d[3]), r[1].data.map(Double.init))
            }
        }
        let extra = spec.scale ? 1 : 0
        let shapes = names.map { found[$0]!.0 }, dense = names.map { layer($0).inFeatures * layer($0).outFeatures }
        let cost = shapes.map { NearestKronecker.parameters($0, terms: 1) + extra }
        let units = Allocation.waterFill(gains: names.map { found[$0]!.1 }, unitCost: cost, minimum: names.map { _ in 1 },
                                         maximum: names.indices.map { min(min(shapes[$0].m1 * shapes[$0].n1, shapes[$0].m2 * shapes[$0].n2), max(1, dense[$0] / cost[$0])) },
                                         budget: dense.reduce(0) { $0 + Int(spec.budget * Double($1)) })
        return Dictionary(uniqueKeysWithValues: names.indices.map { (names[$0], (shapes[$0], units[$0])) })
    }
}
