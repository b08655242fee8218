import Distributed
import Foundation
import Model
import Tensor

/// Which rank factorizes which layer, by which path, and for about how long: the plan the
/// compressor will follow (`planJobs` over the same costs, `svdPath`'s choices), made from the
/// config and the recipe alone, before anything is loaded. `squeeze compress --dry-run` prints it.
///
/// Seconds are estimates: `secondsPerUnit` (measured on this rank by `calibrate()`: the fastest of three
/// LAPACK SVDs of a 384 x 384 matrix) times each job's cost in units of m·n·min(m, n), with the ratios measured
/// by `squeeze bench tall` (`SVDPlan`'s table): LAPACK's QR path on tall matrices ≈ 0.4x its LQ
/// path; TSQR ≈ 0.15·(m/P)·n² on each rank plus P·n³ for the SVD of the stacked R; ScaLAPACK's
/// `p?gesvd` ≈ 20x LAPACK, divided by the ranks. Kronecker jobs (the SVD of the rearranged
/// weight for each candidate factor shape) and SparseGPT (the inverse Hessian's Cholesky and the
/// column sweep) use the costs the compressor spreads them by.
public struct FactorizationPlan: Sendable, Encodable {
    /// One factorization job.
    public struct Job: Sendable, Encodable {
        public let stage: Int
        public let layer: String
        public let method: String
        /// The matrix factorized ([in, out]; [V, C] for wte).
        public let rows: Int, cols: Int
        public let path: SVDPath
        /// The rank that runs it (nil: all ranks together, one collective job after another).
        public let owner: Int?
        /// Estimated seconds on its rank(s), and on one rank alone (for the ideal).
        public let seconds: Double, singleRankSeconds: Double
        /// Whether the job waits for the calibration (its XᵀX, block by block): SparseGPT and the
        /// whitened factorizations.
        public var calibrated = false
    }

    public let ranks: Int
    public let jobs: [Job]
    public let secondsPerUnit: Double
    /// How each budgeted stage shares its parameters among its layers (`allocation`).
    public var allocation: [String] = []

    private enum CodingKeys: String, CodingKey { case ranks, jobs, makespan, ideal, allocation }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ranks, forKey: .ranks)
        try c.encode(jobs, forKey: .jobs)
        try c.encode(makespan, forKey: .makespan)
        try c.encode(ideal, forKey: .ideal)
        try c.encode(allocation, forKey: .allocation)
    }

    /// Seconds until the last rank finishes: per stage, the busiest rank's own jobs, then the
    /// collective ones (which every rank waits for).
    public var makespan: Double {
        Set(jobs.map(\.stage)).reduce(0) { total, stage in
            let js = jobs.filter { $0.stage == stage }
            var load = [Double](repeating: 0, count: ranks)
            for j in js { if let o = j.owner { load[o] += j.seconds } }
            return total + (load.max() ?? 0) + js.filter { $0.owner == nil }.reduce(0) { $0 + $1.seconds }
        }
    }

    /// The same work on one rank, divided by the ranks: the bound no plan beats.
    public var ideal: Double { jobs.reduce(0) { $0 + $1.singleRankSeconds } / Double(ranks) }

    /// Seconds per m·n·min(m, n) of a LAPACK SVD on this rank (with its BLAS threads).
    public static func calibrate() throws -> Double {
        let n = 384
        var g = RandomGenerator(seed: 7)
        let w = try Tensor(shape: [n, n], data: (0..<(n * n)).map { _ in g.nextGaussian() })
        _ = try w.svd()   // warm-up (threads, pages)
        var best = Double.infinity   // the fastest of three: other processes only ever slow a run down
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try w.svd()
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return best / pow(Double(n), 3)
    }

    /// The plan for `recipe` on a model of shape `config` over `ranks` ranks.
    public static func make(recipe: Recipe, config: GPT2Config, ranks: Int, scalapackMinElements: Int?,
                            secondsPerUnit c: Double) throws -> FactorizationPlan {
        let shapes = config.compressibleShapes
        var kroneckerLayers = Set<String>()
        var jobs: [Job] = []
        func targets(_ patterns: [String], at: String) throws -> [(name: String, rows: Int, cols: Int)] {
            let chosen = Set(try Compressor.resolve(patterns, in: shapes.map(\.name), at: at))
            return shapes.filter { chosen.contains($0.name) }
        }
        /// Spreads per-rank jobs by cost as `distributedCompute` does.
        func spread(_ stage: Int, _ method: String, _ ls: [(name: String, rows: Int, cols: Int)], cost: ((rows: Int, cols: Int)) -> Double,
                    repeats: Int = 1, calibrated: Bool = false) {
            // Calibrated jobs are planned block by block, as `calibrate` hands them out.
            let groups = calibrated ? Dictionary(grouping: ls.indices) { BlockLinear.parse(ls[$0].name, layers: config.nLayer)?.block ?? -1 }.sorted { $0.key < $1.key }.map(\.value)
                                    : [Array(ls.indices)]
            for g in groups {
                let owners = planJobs(costs: g.map { cost((ls[$0].rows, ls[$0].cols)) }, ranks: ranks)
                for (i, o) in zip(g, owners) {
                    let l = ls[i], s = Double(repeats) * c * cost((l.rows, l.cols))
                    var job = Job(stage: stage, layer: l.name, method: method, rows: l.rows, cols: l.cols, path: .lapack, owner: o,
                                  seconds: s, singleRankSeconds: s)
                    job.calibrated = calibrated
                    jobs.append(job)
                }
            }
        }
        var allocation: [String] = []
        for st in recipe.stages {
            let at = "stages[\(st.index)]"
            switch st.method {
            case .prune(let p) where p.method == .sparsegpt:
                spread(st.index, "sparsegpt", try targets(p.targets, at: at), cost: { sparseGPTUnits($0.rows, $0.cols) }, calibrated: true)
            case .prune, .distillOnly:
                continue
            case .kronecker(let k):
                let ls = try targets(k.targets, at: at)
                kroneckerLayers.formUnion(ls.map(\.name))
                allocation += describeAllocation(k, stage: st.index, layers: ls)
                if k.whiten {
                    spread(st.index, "kronecker+w", ls, cost: { whitenedKroneckerUnits($0.rows, $0.cols, als: k.als) }, calibrated: true)
                } else {
                    spread(st.index, "kronecker", ls, cost: { kroneckerUnits($0.rows, $0.cols) }, repeats: k.progressive)
                }
            case .lowrank(let spec) where spec.whiten:
                let ls = try targets(spec.targets, at: at)
                allocation += describeAllocation(spec, stage: st.index, layers: ls)
                spread(st.index, "lowrank+w", ls, cost: { whitenedLowRankUnits($0.rows, $0.cols) }, calibrated: true)
            case .lowrank(let spec):
                let ls = try targets(spec.targets, at: at).filter { !kroneckerLayers.contains($0.name) }   // factors of Kronecker layers: tiny, every rank
                var local: [(name: String, rows: Int, cols: Int)] = []
                for l in ls {
                    let k = LowRank.needsSpectrum(spec.rule) ? nil : LowRank.rank(for: spec.rule, rows: l.rows, cols: l.cols, singularValues: [])
                    let path = Compressor.svdPath(rows: l.rows, cols: l.cols, count: l.rows * l.cols, rank: k, ranks: ranks,
                                                  scalapackMinElements: scalapackMinElements)
                    let one = Double(spec.progressive) * c * lapackUnits(l.rows, l.cols)
                    switch path {
                    case .lapack: local.append(l)
                    case .tsqr:
                        let p = Double(tsqrRankCount(rows: l.rows, cols: l.cols, ranks: ranks, rank: k))
                        let (long, short) = (Double(max(l.rows, l.cols)), Double(min(l.rows, l.cols)))
                        let s = Double(spec.progressive) * c * (0.15 * long / p * short * short + p * short * short * short)
                        jobs.append(Job(stage: st.index, layer: l.name, method: "lowrank", rows: l.rows, cols: l.cols, path: .tsqr, owner: nil,
                                        seconds: s, singleRankSeconds: one))
                    case .scalapack:
                        jobs.append(Job(stage: st.index, layer: l.name, method: "lowrank", rows: l.rows, cols: l.cols, path: .scalapack, owner: nil,
                                        seconds: 20 * one / Double(ranks), singleRankSeconds: one))
                    }
                }
                spread(st.index, "lowrank", local, cost: { lapackUnits($0.rows, $0.cols) }, repeats: spec.progressive)
                allocation += describeAllocation(spec, stage: st.index, layers: ls)
            }
        }
        var plan = FactorizationPlan(ranks: ranks, jobs: jobs, secondsPerUnit: c)
        plan.allocation = allocation
        return plan
    }

    /// The cost of a LAPACK SVD in units: m·n·min(m, n), 0.4x for tall or wide matrices (the QR path).
    public static func lapackUnits(_ m: Int, _ n: Int) -> Double {
        let u = Double(m) * Double(n) * Double(min(m, n))
        return max(m, n) >= 2 * min(m, n) ? 0.4 * u : u
    }

    /// The cost of a Kronecker factorization of an [m, n] weight: one SVD of its rearrangement
    /// per candidate factor shape, about m·n·min(m, n) in all.
    public static func kroneckerUnits(_ m: Int, _ n: Int) -> Double { Double(m) * Double(n) * Double(min(m, n)) }

    /// The cost of SparseGPT on an [in, out] weight: the inverse Hessian's Cholesky (in³) and the
    /// column sweep (in²·out), a quarter of an SVD's unit each.
    public static func sparseGPTUnits(_ m: Int, _ n: Int) -> Double { Double(m) * Double(m) * Double(m + n) / 4 }

    /// The cost of a whitened low rank of an [in, out] weight: the Cholesky of XᵀX and the
    /// triangular products (as SparseGPT's), and the SVD of LᵀW in Double (about twice LAPACK's).
    public static func whitenedLowRankUnits(_ m: Int, _ n: Int) -> Double { sparseGPTUnits(m, n) + 2 * lapackUnits(m, n) }

    /// The cost of a whitened Kronecker factorization of an [in, out] weight: per candidate shape
    /// (up to 12) the whitened Gram and its error (in²·out each), the SVDs of the rearrangements
    /// in Double, and per ALS sweep two half-steps of `WhitenedKronecker.cgIterations` products
    /// with the whitened Gram (in²·out each).
    public static func whitenedKroneckerUnits(_ m: Int, _ n: Int, als: Int) -> Double {
        let products = Double(12 + 2 * als * (WhitenedKronecker.cgIterations + 2))
        return 2 * kroneckerUnits(m, n) + products * Double(m) * Double(m) * Double(n) / 4
    }

    /// The plan as a table: one line per job, then the makespan against the ideal.
    public func describe() -> String {
        guard !jobs.isEmpty else { return "factorization plan: nothing to factorize (pruning and distillation only)" }
        func row(_ cells: [String]) -> String {
            "  " + zip(cells, [5, 18, 11, 11, 10, 7]).map { pad($0, $1) }.joined(separator: "  ") + "  " + cells[6]
        }
        var lines = ["factorization plan over \(ranks) rank(s) (estimates from a LAPACK SVD timed on this rank):",
                     row(["stage", "layer", "method", "matrix", "path", "rank", "est. seconds"])]
        for j in jobs {
            lines.append(row(["\(j.stage + 1)", j.layer, j.method, "\(j.rows)x\(j.cols)", j.path.rawValue, j.owner.map { "\($0)" } ?? "all",
                              String(format: "%.2f", j.seconds)]))
        }
        lines.append(String(format: "  makespan %.2f s; ideal %.2f s (the one-rank time / %d ranks); makespan / ideal %.2f",
                            makespan, ideal, ranks, ideal > 0 ? makespan / ideal : 1))
        let calibrated = Set(jobs.filter(\.calibrated).map(\.stage)).sorted()
        if !calibrated.isEmpty {
            lines.append("  stage(s) \(calibrated.map { "\($0 + 1)" }.joined(separator: ", ")) need calibration (--data): their jobs run block by block as the "
                         + "calibration windows reach each block, on the XᵀX of the layers' inputs (+w: whitened)")
        }
        if !allocation.isEmpty { lines += ["budget allocation:"] + allocation.map { "  " + $0 } }
        return lines.joined(separator: "\n")
    }

    private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
}
