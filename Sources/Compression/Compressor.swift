import COpenBLAS
import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// One row of `squeeze compress`'s table: what happened to a layer.
public struct LayerReport: Codable, Sendable, Equatable {
    public var stage: Int
    public var layer: String
    public var method: String
    /// Stored parameters (non-zeros for sparse layers) before and after.
    public var paramsBefore: Int
    public var paramsAfter: Int
    /// ‖W − W'‖_F / ‖W‖_F of the dense weights.
    public var relativeError: Double
}

/// Applies one-shot compression methods to a model's layers. Every rank holds the same model;
/// per-layer jobs are spread over ranks by cost and their results broadcast (`distributedCompute`),
/// the token embedding's SVD runs on ScaLAPACK when it is large and there are several ranks.
public final class Compressor {
    public let model: GPT2
    public let comm: Communicator
    /// Token stream for calibration (Wanda, SparseGPT).
    public var calibrationTokens: [UInt16] = []
    public var calibration = Recipe.Calibration()
    public var seed: UInt64 = 0
    /// Matrices with at least this many elements use ScaLAPACK when there are several ranks.
    public var scalapackMinElements = 20_000_000

    public init(model: GPT2, comm: Communicator) {
        self.model = model
        self.comm = comm
    }

    /// Every compressible name: "wte" and the block linears.
    public var layerNames: [String] { ["wte"] + model.linears.map(\.name) }

    /// Names matched by the glob patterns, in model order; a pattern matching nothing is an error.
    public func resolve(_ patterns: [String], at: String) throws -> [String] {
        var chosen = Set<String>()
        for raw in patterns {
            let p = raw.hasSuffix(".weight") ? String(raw.dropLast(7)) : raw
            let hits = layerNames.filter { globMatch(p, $0) }
            guard !hits.isEmpty else {
                throw CompressionError.recipe("\(at): target '\(raw)' matches no layer (names look like wte, h.0.attn.c_attn, h.0.attn.c_proj, h.0.mlp.c_fc, h.0.mlp.c_proj; '*' matches anything)")
            }
            chosen.formUnion(hits)
        }
        return layerNames.filter { chosen.contains($0) }
    }

    /// The dense weight of a layer ([in, out] for linears, [V, C] for wte).
    public func denseWeight(_ name: String) -> Tensor {
        name == "wte" ? model.embedding.denseWeight(params: model.params) : model.linear(name)!.denseWeight(params: model.params)
    }

    /// Stored non-zero parameters of a layer's weight (bias excluded).
    public func storedParameters(_ name: String) -> Int {
        if name == "wte" { return model.embedding.counts().nonZero }
        return model.linear(name)!.components.reduce(0) { $0 + $1.counts(params: model.params).nonZero }
    }

    func form(_ name: String) -> String { name == "wte" ? model.embedding.form : model.linear(name)!.form }

    func relativeError(_ before: Tensor, _ after: Tensor) -> Double {
        let d = Double((before - after).frobeniusNorm), n = Double(before.frobeniusNorm)
        return n > 0 ? d / n : 0
    }

    // MARK: - Pruning

    /// One-shot pruning to `sparsity` (default the spec's). Layers must be dense or sparse.
    @discardableResult
    public func prune(_ spec: Recipe.PruneSpec, sparsity: Double? = nil, stage: Int, names given: [String]? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].prune"
        let names = try given ?? resolve(spec.targets, at: at)
        for n in names where !["dense", "sparse"].contains(form(n)) {
            throw CompressionError.layer(n, "is \(form(n)); prune applies to dense or already-sparse layers (put pruning before low rank or Kronecker stages)")
        }
        if names.contains("wte") && spec.method != .magnitude {
            throw CompressionError.layer("wte", "\(spec.method.rawValue) needs layer inputs; only magnitude pruning applies to the embedding")
        }
        let s = sparsity ?? spec.sparsity
        let before = names.map { denseWeight($0) }
        let paramsBefore = names.map { storedParameters($0) }
        var newWeights: [String: Tensor] = [:]
        var masks: [String: [Float]] = [:]
        switch (spec.method, spec.scope, spec.nm) {
        case (.magnitude, _, .some(let nm)):
            for (n, w) in zip(names, before) { masks[n] = try Pruning.nmMask(w.data, rows: w.shape[0], cols: w.shape[1], n: nm.n, m: nm.m) }
        case (.magnitude, .global, nil):
            for (n, m) in zip(names, Pruning.globalMagnitudeMasks(before.map(\.data), sparsity: s)) { masks[n] = m }
        case (.magnitude, .layer, nil):
            for (n, w) in zip(names, before) { masks[n] = Pruning.magnitudeMask(w.data, sparsity: s) }
        case (.wanda, _, _), (.sparsegpt, _, _):
            try calibratedPrune(spec, sparsity: s, names: names, masks: &masks, weights: &newWeights, at: at)
        }
        try install(masks: masks, weights: newWeights)
        return zip(names, before).enumerated().map { k, nw in
            LayerReport(stage: stage, layer: nw.0, method: describe(spec, s), paramsBefore: paramsBefore[k],
                        paramsAfter: storedParameters(nw.0), relativeError: relativeError(nw.1, denseWeight(nw.0)))
        }
    }

    func describe(_ spec: Recipe.PruneSpec, _ s: Double) -> String {
        if let nm = spec.nm { return "\(spec.method.rawValue) \(nm.n):\(nm.m)" }
        return "\(spec.method.rawValue) \(Int((s * 100).rounded()))%\(spec.scope == .global ? " global" : "")"
    }

    /// Sets masks (and SparseGPT's updated weights) on dense components and applies them.
    func install(masks: [String: [Float]], weights: [String: Tensor]) throws {
        for (name, mask) in masks {
            if name == "wte" {
                model.embedding.mask = mask
                if let w = weights[name] { try model.params.set(TokenEmbedding.denseName, w) }
            } else {
                let d = model.linear(name)!.components[0] as! DenseComponent
                d.mask = mask
                if let w = weights[name] { try model.params.set(d.weightName, w) }
            }
        }
        model.applyMasks()
    }

    /// Calibration sequences for this rank: `samples` windows of `seq` tokens (seeded), split over ranks.
    func calibrationBatches(at: String) throws -> [[Int32]] {
        let seq = min(calibration.seq, model.config.nPositions)
        guard calibrationTokens.count > seq + 1 else {
            throw CompressionError.recipe("\(at): Wanda and SparseGPT need calibration text (--data) of more than \(seq) tokens")
        }
        var rng = RandomGenerator(seed: seed &+ 0x5EED)
        let starts = (0..<calibration.samples).map { _ in Int(rng.next() % UInt64(calibrationTokens.count - seq)) }
        return starts[share(starts.count, rank: comm.rank, size: comm.size)].map { s in (0..<seq).map { Int32(calibrationTokens[s + $0]) } }
    }

    /// Wanda / SparseGPT, block by block (sequential, as in both papers): the calibration windows'
    /// residual streams are carried from block to block, so block l's inputs come from blocks < l
    /// as already pruned; each block runs twice, once to collect its linears' inputs (from the
    /// unpruned block) and once, pruned, to move the streams on. XᵀX is accumulated over this
    /// rank's windows and summed over ranks; the per-layer solves are spread over ranks.
    func calibratedPrune(_ spec: Recipe.PruneSpec, sparsity s: Double, names: [String], masks: inout [String: [Float]],
                         weights: inout [String: Tensor], at: String) throws {
        let batches = try calibrationBatches(at: at)
        let seq = min(calibration.seq, model.config.nPositions), C = model.config.nEmbd
        let wanted = Set(names)
        let model = self.model
        let workspace = InferenceWorkspace(rows: seq, config: model.config)
        // Residual streams [windows, seq, C] and a scratch copy for the collecting pass.
        var streams = [Float](repeating: 0, count: batches.count * seq * C), scratch = [Float](repeating: 0, count: seq * C)
        streams.withUnsafeMutableBufferPointer { x in
            for (w, ids) in batches.enumerated() { model.embed(ids: ids, B: 1, T: seq, into: x.baseAddress! + w * seq * C) }
        }
        func advance(_ l: Int) throws {
            try streams.withUnsafeMutableBufferPointer { x in
                for w in batches.indices { try model.inferBlock(l, x: x.baseAddress! + w * seq * C, B: 1, T: seq, workspace: workspace) }
            }
        }
        for l in 0..<model.config.nLayer {
            let layers = model.blocks[l].linears.filter { wanted.contains($0.name) }
            if layers.isEmpty { try advance(l); continue }
            // Hessians XᵀX (Double, upper triangle) of this block's targeted layers.
            var hess: [String: [Double]] = [:]
            for lin in layers { hess[lin.name] = [Double](repeating: 0, count: lin.inFeatures * lin.inFeatures) }
            for w in batches.indices {
                streams.withUnsafeBufferPointer { x in scratch.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: x.baseAddress! + w * seq * C, count: seq * C) } }
                try scratch.withUnsafeMutableBufferPointer { x in
                    try model.inferBlock(l, x: x.baseAddress!, B: 1, T: seq, workspace: workspace) { inputs in
                        for (lin, input) in inputs.pairs(model.blocks[l]) where wanted.contains(lin.name) {
                            hess[lin.name]!.withUnsafeMutableBufferPointer { h in
                                accumulateGram(input, rows: seq, cols: lin.inFeatures, into: h.baseAddress!)
                            }
                        }
                    }
                }
            }
            for lin in layers {
                let n = lin.inFeatures
                hess[lin.name]!.withUnsafeMutableBufferPointer { h in
                    for i in 0..<n { for j in 0..<i { h[i * n + j] = h[j * n + i] } }   // syrk filled the upper triangle
                }
                try comm.allreduce(&hess[lin.name]!)
            }
            let costs = layers.map { Double($0.inFeatures) * Double($0.inFeatures) * Double($0.inFeatures + $0.outFeatures) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j]
                let w = lin.denseWeight(params: model.params)
                let h = hess[lin.name]!
                let rows = lin.inFeatures, cols = lin.outFeatures
                switch spec.method {
                case .wanda:
                    let norms = (0..<rows).map { h[$0 * rows + $0].squareRoot() }
                    let mask = try Pruning.wandaMask(w.data, rows: rows, cols: cols, inputNorms: norms, sparsity: s, nm: spec.nm.map { ($0.n, $0.m) })
                    return [try Tensor(shape: w.shape, data: mask)]
                default:
                    let (nw, mask) = try sparseGPT(weight: w.data, rows: rows, cols: cols, hessian: h, sparsity: s,
                                                   nm: spec.nm.map { ($0.n, $0.m) }, blockSize: spec.blockSize, percdamp: spec.percdamp)
                    return [try Tensor(shape: w.shape, data: mask), try Tensor(shape: w.shape, data: nw)]
                }
            }
            var blockMasks: [String: [Float]] = [:], blockWeights: [String: Tensor] = [:]
            for (lin, r) in zip(layers, results) {
                blockMasks[lin.name] = r[0].data
                masks[lin.name] = r[0].data
                if r.count > 1 { blockWeights[lin.name] = r[1]; weights[lin.name] = r[1] }
            }
            // Install now so the next block's inputs come from the pruned model.
            try install(masks: blockMasks, weights: blockWeights)
            try advance(l)
        }
    }

    // MARK: - Kronecker

    /// Replaces each target's weight by a sum of Kronecker products: `terms` of them (or, with
    /// `terms: auto`, as many as `budget` holds, in the shape of least error), from Van Loan's SVD
    /// or block selection, with learnable norm-matched scales when `spec.scale`. A progressive step
    /// passes its own `budget` and re-factorises layers already in Kronecker form in their shape.
    @discardableResult
    public func kronecker(_ spec: Recipe.KroneckerSpec, stage: Int, budget stepBudget: Double? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].kronecker"
        let names = try resolve(spec.targets, at: at)
        if names.contains("wte") { throw CompressionError.layer("wte", "Kronecker factorisation applies to the block linears, not the embedding (50257 has no useful factors)") }
        let lins = names.map { model.linear($0)! }
        let budget = stepBudget ?? spec.budget
        let refactor = stepBudget != nil
        for lin in lins where lin.form.contains("kronecker") && !refactor { throw CompressionError.layer(lin.name, "is already Kronecker-factored") }
        let before = lins.map { $0.denseWeight(params: model.params) }
        let paramsBefore = names.map { storedParameters($0) }
        let current = lins.map { $0.components.first as? KroneckerComponent }
        if let f = spec.factors {
            for lin in lins where lin.inFeatures % f.m1 != 0 || lin.outFeatures % f.n1 != 0 {
                throw CompressionError.layer(lin.name, "shape [\(lin.inFeatures), \(lin.outFeatures)] does not factor as [\(f.m1)·m2, \(f.n1)·n2] (\(at).factors)")
            }
        }
        let costs = lins.map { Double($0.inFeatures * $0.outFeatures) * Double(min($0.inFeatures, $0.outFeatures)) }
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
            let r = spec.initialisation == .select ? try NearestKronecker.selectFactorize(w, shape: shape, terms: terms)
                                                   : try NearestKronecker.factorize(w, shape: shape, terms: terms, seed: seed)
            // Norm matching: every term scaled by ‖W‖_F / ‖Σ A ⊗ B‖_F.
            let norm = NearestKronecker.norm(a: r.a, b: r.b)
            let s = spec.scale && norm > 0 ? Float(Double(w.frobeniusNorm) / norm) : 1
            return r.a + r.b + [try Tensor(shape: [1], data: [s])]
        }
        var tensors: [String: Tensor] = [:]
        for (lin, r) in zip(lins, results) {
            let k = (r.count - 1) / 2
            let s = KroneckerShape(m1: r[0].shape[0], n1: r[0].shape[1], m2: r[k].shape[0], n2: r[k].shape[1])
            let comp = KroneckerComponent(prefix: lin.name, shape: s, terms: k, scaled: spec.scale)
            for i in 0..<k {
                tensors[comp.name(i, "a")] = r[i]; tensors[comp.name(i, "b")] = r[k + i]
                if spec.scale { tensors[comp.name(i, "s")] = r[2 * k] }
            }
            lin.components = [comp]
        }
        try model.rebuildParameters(from: tensors)
        return names.enumerated().map { k, n in
            let comp = lins[k].components[0] as! KroneckerComponent
            let s = comp.shape
            return LayerReport(stage: stage, layer: n, method: "kronecker [\(s.m1)x\(s.n1)]⊗[\(s.m2)x\(s.n2)] x\(comp.terms)"
                                + (spec.initialisation == .select ? " select" : "") + (spec.scale ? " scaled" : ""),
                               paramsBefore: paramsBefore[k], paramsAfter: storedParameters(n),
                               relativeError: relativeError(before[k], denseWeight(n)))
        }
    }

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
        for n in kronNames {
            let lin = model.linear(n)!
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
        let big = svdNames.enumerated().filter { comm.size > 1 && svdBefore[$0.offset].count >= scalapackMinElements }.map(\.offset)
        let small = svdNames.indices.filter { !big.contains($0) }
        var factors: [Int: [Tensor]] = [:]
        let costs = small.map { i -> Double in let s = svdBefore[i].shape; return Double(s[0] * s[1]) * Double(min(s[0], s[1])) }
        let smallResults = try distributedCompute(costs: costs, comm: comm) { j in
            let i = small[j]
            let w = svdBefore[i]
            let sv = LowRank.needsSpectrum(spec.rule) && ranks == nil ? try w.singularValuesDouble() : []
            let r = ranks?[svdNames[i]] ?? LowRank.rank(for: spec.rule, rows: w.shape[0], cols: w.shape[1], singularValues: sv)
            let f = try LowRank.factorize(w, rank: r, seed: seed)
            return [f.w0, f.w1]
        }
        for (j, i) in small.enumerated() { factors[i] = smallResults[j] }
        for i in big {
            // Collective ScaLAPACK SVD on a BLACS grid over all ranks (wte-sized matrices).
            let w = svdBefore[i]
            let svd = try scalapackSVD(w, rows: w.shape[0], cols: w.shape[1], broadcastResult: true)!
            let sv = svd.S.map(Double.init)
            let r = ranks?[svdNames[i]] ?? LowRank.rank(for: spec.rule, rows: w.shape[0], cols: w.shape[1], singularValues: sv)
            let t = svd.truncated(to: r)
            var w0 = t.U, w1 = try t.Vt.transposed()
            for row in 0..<w0.shape[0] { for k in 0..<r { w0.data[row * r + k] *= Float(sv[k].squareRoot()) } }
            for row in 0..<w1.shape[0] { for k in 0..<r { w1.data[row * r + k] *= Float(sv[k].squareRoot()) } }
            factors[i] = [w0, w1]
        }
        for (i, n) in svdNames.enumerated() {
            let f = factors[i]!
            let r = f[0].shape[1]
            if n == "wte" {
                model.embedding.rank = r
                model.embedding.mask = nil
                tensors[TokenEmbedding.w0Name] = f[0]; tensors[TokenEmbedding.w1Name] = f[1]
                continue
            }
            let lin = model.linear(n)!
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
            if f == "kronecker", let c = model.linear(n)!.components[0] as? KroneckerComponent {
                label = "lowrank factors (A rank \(c.factorRankA ?? 0), B rank \(c.factorRankB ?? 0))"
            } else if n == "wte" {
                label = "lowrank r=\(model.embedding.rank ?? 0)"
            } else {
                let r = (model.linear(n)!.components[0] as? LowRankComponent)?.rank ?? 0
                label = "lowrank r=\(r)" + (spec.sparseResidual.map { " + \(String(format: "%.1f", $0 * 100))% sparse" } ?? "")
            }
            reports.append(LayerReport(stage: stage, layer: n, method: label, paramsBefore: paramsBefore[k], paramsAfter: storedParameters(n),
                                       relativeError: relativeError(before[k], denseWeight(n))))
        }
        return reports
    }

    /// Current rank of a layer (min(in, out) for dense ones), for progressive schedules.
    public func currentRank(_ name: String) -> Int {
        if name == "wte" { return model.embedding.rank ?? min(model.config.vocabSize, model.config.nEmbd) }
        let lin = model.linear(name)!
        if let lr = lin.components.first as? LowRankComponent { return lr.rank }
        return min(lin.inFeatures, lin.outFeatures)
    }
}

/// H (upper triangle, row-major cols x cols) += Xᵀ X in Double for X row-major [rows, cols] (BLAS
/// dsyrk, in slices of 256 rows so the Double copy stays small).
func accumulateGram(_ x: UnsafePointer<Float>, rows: Int, cols n: Int, into h: UnsafeMutablePointer<Double>) {
    let slice = 256
    withUnsafeTemporaryAllocation(of: Double.self, capacity: slice * n) { xd in
        var r0 = 0
        while r0 < rows {
            let k = min(slice, rows - r0)
            for i in 0..<(k * n) { xd[i] = Double(x[r0 * n + i]) }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1, xd.baseAddress!, Int32(n), 1, h, Int32(n))
            r0 += k
        }
    }
}
