import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// Pruning: magnitude (per layer, global, N:M), Wanda and SparseGPT with calibration.
extension Compressor {
    // MARK: - Pruning

    /// One-shot pruning to `sparsity` (default the spec's). Layers must be dense or sparse.
    @discardableResult
    public func prune(_ spec: Recipe.PruneSpec, sparsity: Double? = nil, stage: Int, names given: [String]? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].prune"
        let names = try given ?? resolve(spec.targets, at: at)
        for n in names where layer(n).maskable == nil {
            throw CompressionError.layer(n, "is \(layer(n).summary); prune applies to dense or already-sparse layers (put pruning before low rank or Kronecker stages)")
        }
        if spec.method != .magnitude, let n = names.first(where: { !layer($0).multipliesActivations }) {
            throw CompressionError.layer(n, "\(spec.method.rawValue) needs the layer's inputs; only magnitude pruning applies to a lookup table")
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

    /// Sets masks (and SparseGPT's updated weights) on the layers' dense components and applies them.
    func install(masks: [String: [Float]], weights: [String: Tensor]) throws {
        for (name, mask) in masks {
            guard let d = layer(name).maskable else { throw CompressionError.layer(name, "has no dense weight to prune") }
            d.mask = BitMask(mask)
            if let w = weights[name] { try model.params.set(d.weightName, w) }
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
        let workspace = InferenceWorkspace(rows: seq, forms: model.forms)
        // Residual streams [windows, seq, C] and a scratch copy for the collecting pass.
        var streams = [Float](repeating: 0, count: batches.count * seq * C), scratch = [Float](repeating: 0, count: seq * C)
        streams.withUnsafeMutableBufferPointer { x in
            for (w, ids) in batches.enumerated() { model.embed(ids: ids, B: 1, T: seq, into: x.baseAddress! + w * seq * C, workspace: workspace) }
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
            let costs = layers.map { FactorizationPlan.sparseGPTUnits($0.inFeatures, $0.outFeatures) }
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
}
