import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// Truncated SVD (one-shot or a progressive step), of the factors of factorized (Kronecker)
/// layers, and low rank plus a sparse residual.
extension Compressor {
    // MARK: - Low rank

    /// Truncated SVD of each target (or of each factor of a factorized layer, or a lower rank for
    /// low-rank layers); with `whiten`, the data-aware truncation of `whitenedLowRank`. `ranks`
    /// overrides the spec's rule per layer (progressive steps).
    @discardableResult
    public func lowrank(_ spec: Recipe.LowRankSpec, stage: Int, ranks: [String: Int]? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].lowrank"
        let names = try resolve(spec.targets, at: at)
        if spec.whiten { return try whitenedLowRank(spec, names: names, stage: stage, at: at) }
        let states = names.map { state($0) }, before = states.map(\.weight)
        // Factorized layers (Kronecker): low rank on their factors (small SVDs, done everywhere).
        let factorized = names.filter { layer($0).single is FactorizedForm }
        if let n = factorized.first, spec.sparseResidual != nil || spec.progressive > 1 {
            throw CompressionError.layer(n, "is \(layer(n).summary): low rank applies to its factors, one-shot and without sparse_residual (\(at))")
        }
        var tensors: [String: Tensor] = [:]
        var labels: [String: String] = [:]
        for n in factorized { tensors.merge(try lowRankFactors(n, spec.rule), uniquingKeysWith: { $1 }) }
        // Every other layer (dense, sparse, low rank, wte): SVD of its dense weight.
        let svdNames = names.filter { !factorized.contains($0) }
        let factors = try svdFactors(svdNames, weights: svdNames.map { before[names.firstIndex(of: $0)!] }, rule: spec.rule, ranks: ranks)
        for (n, f) in zip(svdNames, factors) {
            tensors.merge(try install(n, factors: f.factors, weight: before[names.firstIndex(of: n)!], sparseResidual: spec.sparseResidual),
                          uniquingKeysWith: { $1 })
            labels[n] = (spec.sparseResidual.map { " + \(String(format: "%.1f", $0 * 100))% sparse" } ?? "") + (f.path == .lapack ? "" : " (\(f.path.rawValue))")
        }
        try model.rebuildParameters(from: tensors)
        return names.enumerated().map { k, n in
            let l = layer(n)
            let label = (l.single as? FactorizedForm).map { "lowrank factors: \($0.summary)" }
                ?? "lowrank r=\((l.components.first as? RankedForm)?.rank ?? 0)" + (labels[n] ?? "")
            return report(stage: stage, n, label, before: states[k])
        }
    }

    /// Replaces a factorized layer's factors by low-rank products (ranks by `rule` on each factor).
    private func lowRankFactors(_ name: String, _ rule: LowRank.RankRule) throws -> [String: Tensor] {
        let lin = layer(name)
        guard let form = lin.single as? FactorizedForm else { return [:] }
        let seed = self.seed
        let (comp, tensors) = try form.withLowRankFactors(params: model.params, rank: { f in
            let sv = LowRank.needsSpectrum(rule) ? try f.singularValuesDouble() : []
            return LowRank.rank(for: rule, rows: f.shape[0], cols: f.shape[1], singularValues: sv)
        }, factorize: { f, r in let x = try LowRank.factorize(f, rank: r, seed: seed); return (x.w0, x.w1) })
        lin.components = [comp]
        return tensors
    }

    /// The balanced factors (W0, W1) of each weight's truncated SVD, and the path each took: the
    /// LAPACK ones spread over ranks by cost, then the collective ones (TSQR, ScaLAPACK) one
    /// after another on all ranks.
    private func svdFactors(_ names: [String], weights: [Tensor], rule: LowRank.RankRule, ranks: [String: Int]?) throws
        -> [(factors: [Tensor], path: SVDPath)] {
        let seed = self.seed
        let paths = names.indices.map { svdPath(weights[$0], rule: rule, rank: ranks?[names[$0]]) }
        let small = names.indices.filter { paths[$0] == .lapack }
        var factors: [Int: [Tensor]] = [:]
        let costs = small.map { i -> Double in let s = weights[i].shape; return FactorizationPlan.lapackUnits(s[0], s[1]) }
        let smallResults = try distributedCompute(costs: costs, comm: comm) { j in
            let w = weights[small[j]]
            let sv = LowRank.needsSpectrum(rule) && ranks == nil ? try w.singularValuesDouble() : []
            let r = ranks?[names[small[j]]] ?? LowRank.rank(for: rule, rows: w.shape[0], cols: w.shape[1], singularValues: sv)
            let f = try LowRank.factorize(w, rank: r, seed: seed)
            return [f.w0, f.w1]
        }
        for (j, i) in small.enumerated() { factors[i] = smallResults[j] }
        for i in names.indices where paths[i] != .lapack {
            let w = weights[i], (m, n) = (w.shape[0], w.shape[1])
            let known = ranks?[names[i]] ?? (LowRank.needsSpectrum(rule) ? nil : LowRank.rank(for: rule, rows: m, cols: n, singularValues: []))
            let svd = try collectiveSVD(w, path: paths[i], rank: known)
            let f = svd.balancedFactors(rank: known ?? LowRank.rank(for: rule, rows: m, cols: n, singularValues: svd.S.map(Double.init)))
            factors[i] = [f.left, f.right]
        }
        return names.indices.map { (factors[$0]!, paths[$0]) }
    }

    /// The SVD of `w` over all ranks: TSQR for tall (or, transposed, wide) matrices such as wte,
    /// ScaLAPACK when asked for (`--scalapack-min`).
    private func collectiveSVD(_ w: Tensor, path: SVDPath, rank: Int?) throws -> SVD {
        let (m, n) = (w.shape[0], w.shape[1])
        if path == .scalapack { return try scalapackSVD(w, rows: m, cols: n, broadcastResult: true)! }
        if m >= n { return try tallSVD(w, rank: rank, comm: comm) }
        // A wide matrix: TSQR of Wᵀ = V S Uᵀ.
        let t = try tallSVD(try w.transposed(), rank: rank, comm: comm)
        return SVD(U: try t.Vt.transposed(), S: t.S, Vt: try t.U.transposed())
    }

    /// Makes layer `name` the low-rank product W0 W1ᵀ (plus, with `sparseResidual`, the largest
    /// entries of the residual as a masked dense part); returns the new parameters.
    func install(_ name: String, factors f: [Tensor], weight: Tensor, sparseResidual: Double?) throws -> [String: Tensor] {
        let lin = layer(name)
        let comp = LowRankComponent(layer: name, inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, rank: f[0].shape[1])
        var tensors = [comp.w0Name: f[0], comp.w1Name: f[1]]
        var comps: [WeightComponent] = [comp]
        if let frac = sparseResidual {
            // Low rank + sparse: keep the largest |residual| entries as a masked dense part.
            let residual = weight - (try f[0].matmul(f[1], transposeOther: true))
            let mask = Pruning.magnitudeMask(residual.data, sparsity: 1 - frac)
            let sparse = DenseComponent(weightName: name + ".sparse", inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, mask: BitMask(mask))
            tensors[sparse.weightName] = try Tensor(shape: residual.shape, data: zip(residual.data, mask).map { $0 * $1 })
            comps.append(sparse)
        }
        lin.components = comps
        return tensors
    }

    /// How the SVD of `w` runs: `--scalapack-min` sends matrices at least that large to ScaLAPACK;
    /// otherwise TSQR over the ranks for tall or wide matrices (the embedding) and LAPACK as one of
    /// the jobs spread over ranks for the rest.
    func svdPath(_ w: Tensor, rule: LowRank.RankRule, rank given: Int?) -> SVDPath {
        let (m, n) = (w.shape[0], w.shape[1])
        let k = given ?? (LowRank.needsSpectrum(rule) ? nil : LowRank.rank(for: rule, rows: m, cols: n, singularValues: []))
        return Self.svdPath(rows: m, cols: n, count: w.count, rank: k, ranks: comm.size, scalapackMinElements: scalapackMinElements)
    }

    /// The path for a `rows x cols` matrix of `count` elements truncated to `rank` (nil: unknown
    /// before its spectrum) on `ranks` ranks (also used by `FactorizationPlan`).
    public static func svdPath(rows m: Int, cols n: Int, count: Int, rank k: Int?, ranks: Int, scalapackMinElements: Int?) -> SVDPath {
        guard ranks > 1 else { return .lapack }
        if let min = scalapackMinElements, count >= min { return .scalapack }
        return tsqrRankCount(rows: m, cols: n, ranks: ranks, rank: k) >= 2 ? .tsqr : .lapack
    }
}
