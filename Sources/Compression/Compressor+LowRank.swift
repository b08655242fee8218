import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// Truncated SVD (one-shot or a progressive step), of the factors of Kronecker layers, and low
/// rank plus a sparse residual.
extension Compressor {
    // MARK: - Low rank

    /// Truncated SVD of each target (or of each Kronecker factor for Kronecker layers, or a lower
    /// rank for low-rank layers). `ranks` overrides the spec's rule per layer (progressive steps).
    @discardableResult
    public func lowrank(_ spec: Recipe.LowRankSpec, stage: Int, ranks: [String: Int]? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].lowrank"
        let names = try resolve(spec.targets, at: at)
        let before = names.map { denseWeight($0) }
        let paramsBefore = names.map { storedParameters($0) }
        let seed = self.seed
        var tensors: [String: Tensor] = [:]
        var reports: [LayerReport] = []

        // Kronecker layers: low rank on the factors (small SVDs, done everywhere).
        let kronNames = names.filter { form($0) == "kronecker" }
        if !kronNames.isEmpty, spec.sparseResidual != nil {
            throw CompressionError.layer(kronNames[0], "is Kronecker-factored: low rank applies to its factors, which take no sparse_residual (\(at))")
        }
        if !kronNames.isEmpty, spec.progressive > 1 {
            throw CompressionError.layer(kronNames[0], "is Kronecker-factored: low rank of its factors is one-shot, not progressive (\(at))")
        }
        for n in kronNames {
            let lin = layer(n)
            let comp = lin.components[0] as! KroneckerComponent
            let s = comp.shape
            func rankFor(_ f: Tensor) throws -> Int {
                let sv = LowRank.needsSpectrum(spec.rule) ? try f.singularValuesDouble() : []
                return LowRank.rank(for: spec.rule, rows: f.shape[0], cols: f.shape[1], singularValues: sv)
            }
            var ra = 0, rb = 0
            var parts: [(Int, Tensor, Tensor)] = []
            for i in 0..<comp.terms {
                parts.append((i, try Tensor(shape: [s.m1, s.n1], data: comp.factorA(i, params: model.params)),
                              try Tensor(shape: [s.m2, s.n2], data: comp.factorB(i, params: model.params))))
                ra = max(ra, try rankFor(parts.last!.1)); rb = max(rb, try rankFor(parts.last!.2))
            }
            let newComp = KroneckerComponent(prefix: n, shape: s, terms: comp.terms, factorRankA: ra, factorRankB: rb, scaled: comp.scaled)
            for (i, a, b) in parts {
                let fa = try LowRank.factorize(a, rank: ra, seed: seed), fb = try LowRank.factorize(b, rank: rb, seed: seed)
                tensors[newComp.name(i, "a0")] = fa.w0; tensors[newComp.name(i, "a1")] = fa.w1
                tensors[newComp.name(i, "b0")] = fb.w0; tensors[newComp.name(i, "b1")] = fb.w1
            }
            lin.components = [newComp]
        }

        // Dense, sparse and low-rank layers (and wte): SVD of the dense weight.
        let svdNames = names.filter { form($0) != "kronecker" }
        let svdBefore = svdNames.map { n in before[names.firstIndex(of: n)!] }
        let paths = svdNames.indices.map { svdPath(svdBefore[$0], rule: spec.rule, rank: ranks?[svdNames[$0]]) }
        let small = svdNames.indices.filter { paths[$0] == .lapack }
        var factors: [Int: [Tensor]] = [:]
        let costs = small.map { i -> Double in let s = svdBefore[i].shape; return FactorisationPlan.lapackUnits(s[0], s[1]) }
        let smallResults = try distributedCompute(costs: costs, comm: comm) { j in
            let i = small[j]
            let w = svdBefore[i]
            let sv = LowRank.needsSpectrum(spec.rule) && ranks == nil ? try w.singularValuesDouble() : []
            let r = ranks?[svdNames[i]] ?? LowRank.rank(for: spec.rule, rows: w.shape[0], cols: w.shape[1], singularValues: sv)
            let f = try LowRank.factorize(w, rank: r, seed: seed)
            return [f.w0, f.w1]
        }
        for (j, i) in small.enumerated() { factors[i] = smallResults[j] }
        for i in svdNames.indices where paths[i] != .lapack {
            // Collective SVDs over all ranks, one matrix after another: TSQR for tall (or wide)
            // matrices such as wte, ScaLAPACK when asked for (--scalapack-min).
            let w = svdBefore[i]
            let (m, n) = (w.shape[0], w.shape[1])
            let known = ranks?[svdNames[i]] ?? (LowRank.needsSpectrum(spec.rule) ? nil : LowRank.rank(for: spec.rule, rows: m, cols: n, singularValues: []))
            let svd: SVD
            if paths[i] == .scalapack {
                svd = try scalapackSVD(w, rows: m, cols: n, broadcastResult: true)!
            } else if m >= n {
                svd = try tallSVD(w, rank: known, comm: comm)
            } else {
                // A wide matrix: TSQR of Wᵀ = V S Uᵀ.
                let t = try tallSVD(try w.transposed(), rank: known, comm: comm)
                svd = SVD(U: try t.Vt.transposed(), S: t.S, Vt: try t.U.transposed())
            }
            let r = known ?? LowRank.rank(for: spec.rule, rows: m, cols: n, singularValues: svd.S.map(Double.init))
            let f = svd.balancedFactors(rank: r)
            factors[i] = [f.left, f.right]
        }
        for (i, n) in svdNames.enumerated() {
            let f = factors[i]!
            let r = f[0].shape[1]
            let lin = layer(n)
            let comp = LowRankComponent(prefix: n + ".lowrank", inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, rank: r)
            tensors[comp.w0Name] = f[0]; tensors[comp.w1Name] = f[1]
            var comps: [WeightComponent] = [comp]
            if let frac = spec.sparseResidual {
                // Low rank + sparse: keep the largest |residual| entries as a masked dense part.
                let recon = try f[0].matmul(f[1], transposeOther: true)
                let residual = svdBefore[i] - recon
                let mask = Pruning.magnitudeMask(residual.data, sparsity: 1 - frac)
                let sparse = DenseComponent(weightName: n + ".sparse", inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, mask: mask)
                tensors[sparse.weightName] = try Tensor(shape: residual.shape, data: zip(residual.data, mask).map { $0 * $1 })
                comps.append(sparse)
            }
            lin.components = comps
        }
        try model.rebuildParameters(from: tensors)
        for (k, n) in names.enumerated() {
            let f = form(n)
            let label: String
            if f == "kronecker", let c = layer(n).components[0] as? KroneckerComponent {
                label = "lowrank factors (A rank \(c.factorRankA ?? 0), B rank \(c.factorRankB ?? 0))"
            } else {
                let r = (layer(n).components[0] as? LowRankComponent)?.rank ?? 0
                let path = svdNames.firstIndex(of: n).map { paths[$0] } ?? .lapack
                label = "lowrank r=\(r)" + (spec.sparseResidual.map { " + \(String(format: "%.1f", $0 * 100))% sparse" } ?? "")
                    + (path == .lapack ? "" : " (\(path.rawValue))")
            }
            reports.append(LayerReport(stage: stage, layer: n, method: label, paramsBefore: paramsBefore[k], paramsAfter: storedParameters(n),
                                       relativeError: relativeError(before[k], denseWeight(n))))
        }
        return reports
    }

    /// How the SVD of `w` runs: `--scalapack-min` sends matrices at least that large to ScaLAPACK;
    /// otherwise the measured planner (`distributedSVDPath`) picks TSQR over the ranks for tall or
    /// wide matrices (the embedding) and LAPACK as one of the jobs spread over ranks for the rest.
    func svdPath(_ w: Tensor, rule: LowRank.RankRule, rank given: Int?) -> SVDPath {
        let (m, n) = (w.shape[0], w.shape[1])
        let k = given ?? (LowRank.needsSpectrum(rule) ? nil : LowRank.rank(for: rule, rows: m, cols: n, singularValues: []))
        return Self.svdPath(rows: m, cols: n, count: w.count, rank: k, ranks: comm.size, scalapackMinElements: scalapackMinElements)
    }

    /// The path for a `rows x cols` matrix of `count` elements truncated to `rank` (nil: unknown
    /// before its spectrum) on `ranks` ranks (also used by `FactorisationPlan`).
    static func svdPath(rows m: Int, cols n: Int, count: Int, rank k: Int?, ranks: Int, scalapackMinElements: Int?) -> SVDPath {
        guard ranks > 1 else { return .lapack }
        if let min = scalapackMinElements, count >= min { return .scalapack }
        return tsqrRankCount(rows: m, cols: n, ranks: ranks, rank: k) >= 2 ? .tsqr : .lapack
    }
}
