import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// Sums of Kronecker products (Van Loan, block selection, terms: auto, progressive).
extension Compressor {
    // MARK: - Kronecker

    /// Replaces each target's weight by a sum of Kronecker products: `terms` of them (or, with
    /// `terms: auto`, as many as `budget` holds, in the shape of least error), from Van Loan's SVD
    /// or block selection (with `whiten`, the data-aware factors of `whitenedKronecker`), with
    /// learnable norm-matched scales when `spec.scale` (else the least-squares factors as they
    /// are). A progressive step passes its own `budget` and re-factorizes layers already in
    /// Kronecker form in their shape.
    @discardableResult
    public func kronecker(_ spec: Recipe.KroneckerSpec, stage: Int, budget stepBudget: Double? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].kronecker"
        let names = try resolve(spec.targets, at: at)
        let lins = names.map { layer($0) }
        let budget = stepBudget ?? spec.budget
        let refactor = stepBudget != nil
        for lin in lins where lin.components.contains(where: { $0 is KroneckerStructured }) && !refactor {
            throw CompressionError.layer(lin.name, "is already Kronecker-factored")
        }
        let states = names.map { state($0) }, before = states.map(\.weight)
        let current = lins.map { $0.single as? KroneckerStructured }
        if let f = spec.factors {
            for lin in lins where lin.inFeatures % f.m1 != 0 || lin.outFeatures % f.n1 != 0 {
                throw CompressionError.layer(lin.name, "shape [\(lin.inFeatures), \(lin.outFeatures)] does not factor as [\(f.m1)·m2, \(f.n1)·n2] (\(at).factors)")
            }
        }
        if spec.whiten { return try whitenedKronecker(spec, names: names, stage: stage, at: at) }
        let costs = lins.map { FactorizationPlan.kroneckerUnits($0.inFeatures, $0.outFeatures) }
        let seed = self.seed
        let extra = spec.scale ? 1 : 0
        let results = try distributedCompute(costs: costs, comm: comm) { j in
            let w = before[j], lin = lins[j]
            let allowed = Int(budget * Double(lin.inFeatures * lin.outFeatures))
            let shape: KroneckerShape, terms: Int
            if let keep = current[j]?.shape {
                // A progressive step: the layer keeps its shape and loses terms.
                shape = keep
                terms = max(1, min(spec.terms ?? Int.max, allowed / (NearestKronecker.parameters(keep, terms: 1) + extra), min(keep.m1 * keep.n1, keep.m2 * keep.n2)))
            } else if let t = spec.terms {
                if let f = spec.factors {
                    shape = KroneckerShape(m1: f.m1, n1: f.n1, m2: lin.inFeatures / f.m1, n2: lin.outFeatures / f.n1)
                } else {
                    shape = try NearestKronecker.autoShape(w, terms: t, budget: allowed - t * extra).0
                }
                terms = t
            } else {
                (shape, terms, _) = try NearestKronecker.autoShapeAndTerms(w, budget: allowed, perTermExtra: extra)
            }
            let r = spec.initialization == .select ? try NearestKronecker.selectFactorize(w, shape: shape, terms: terms)
                                                   : try NearestKronecker.factorize(w, shape: shape, terms: terms, seed: seed)
            return r.a + r.b + [try Tensor(shape: [1], data: [Self.normMatchedScale(w, a: r.a, b: r.b, scaled: spec.scale)])]
        }
        try installKronecker(lins, results, scaled: spec.scale)
        return names.enumerated().map { k, n in
            report(stage: stage, n, lins[k].summary + (spec.initialization == .select ? " select" : ""), before: states[k])
        }
    }

    /// The scale of every term: ‖W‖_F / ‖Σ A ⊗ B‖_F when `scaled` (norm matching), else 1.
    static func normMatchedScale(_ w: Tensor, a: [Tensor], b: [Tensor], scaled: Bool) -> Float {
        let norm = NearestKronecker.norm(a: a, b: b)
        return scaled && norm > 0 ? Float(Double(w.frobeniusNorm) / norm) : 1
    }

    /// Makes each layer the Kronecker sum of its result `[A_1…A_k, B_1…B_k, s, …]` (the scale s
    /// is the first value of tensor 2k; tensors after it are the caller's), scaled when `scaled`.
    func installKronecker(_ lins: [WeightedLayer], _ results: [[Tensor]], scaled: Bool) throws {
        var tensors: [String: Tensor] = [:]
        for (lin, r) in zip(lins, results) {
            let k = r.prefix { $0.shape.count == 2 }.count / 2
            let s = KroneckerShape(m1: r[0].shape[0], n1: r[0].shape[1], m2: r[k].shape[0], n2: r[k].shape[1])
            let comp = KroneckerComponent(prefix: lin.name, shape: s, terms: k, scaled: scaled)
            for i in 0..<k {
                tensors[comp.name(i, "a")] = r[i]; tensors[comp.name(i, "b")] = r[k + i]
                if scaled { tensors[comp.name(i, "s")] = try Tensor(shape: [1], data: [r[2 * k].data[0]]) }
            }
            lin.components = [comp]
        }
        try model.rebuildParameters(from: tensors)
    }
}
