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
        let states = names.map { state($0) }, before = states.map(\.weight)
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
        try install(masks: masks, weights: newWeights, nm: spec.nm)
        return zip(names, states).map { report(stage: stage, $0, describe(spec, s), before: $1) }
    }

    func describe(_ spec: Recipe.PruneSpec, _ s: Double) -> String {
        if let nm = spec.nm { return "\(spec.method.rawValue) \(nm.n):\(nm.m)" }
        return "\(spec.method.rawValue) \(Int((s * 100).rounded()))%\(spec.scope == .global ? " global" : "")"
    }

    /// Sets masks (and SparseGPT's updated weights) on the layers' dense components and applies
    /// them; `nm` records an N:M structure on the weights (so 2:4 packs as 2:4).
    func install(masks: [String: [Float]], weights: [String: Tensor], nm: (n: Int, m: Int)? = nil) throws {
        for (name, mask) in masks {
            guard let d = layer(name).maskable else { throw CompressionError.layer(name, "has no dense weight to prune") }
            d.mask = BitMask(mask)
            (d as? DenseComponent)?.nm = nm
            if let w = weights[name] { try model.params.set(d.weightName, w) }
        }
        model.applyMasks()
    }

    /// Wanda / SparseGPT on the calibration (`calibrate`): per block, the masks (and SparseGPT's
    /// updated weights) of its targeted layers, solved on the ranks by cost, installed before the
    /// windows move on.
    func calibratedPrune(_ spec: Recipe.PruneSpec, sparsity s: Double, names: [String], masks: inout [String: [Float]],
                         weights: inout [String: Tensor], at: String) throws {
        let model = self.model
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.sparseGPTUnits($0.inFeatures, $0.outFeatures) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                let lin = layers[j]
                let w = lin.denseWeight(params: model.params)
                let h = grams[lin.name]!
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
            try install(masks: blockMasks, weights: blockWeights, nm: spec.nm)
        }
    }
}
