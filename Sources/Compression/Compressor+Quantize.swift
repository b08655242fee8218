import Distributed
import Foundation
import Kernels
import Model
import MPI
import Tensor

/// Quantization to ggml's blocks (Q8_0, Q4_0): round to nearest, or GPTQ on the calibration
/// (with SparseGPT's pruning in the same sweep when the stage also prunes with sparsegpt).
extension Compressor {
    /// Quantizes each target (less `skip`): every component of the layer becomes a
    /// `QuantizedComponent`. GPTQ applies to block linears that are one dense (or masked) or one
    /// low-rank weight; other targets (the embedding, Kronecker layers) take round to nearest,
    /// and the report says so. `joint` (a sparsegpt prune of the same stage, and its sparsity)
    /// prunes in the GPTQ sweep.
    @discardableResult
    public func quantize(_ spec: Recipe.QuantizeSpec, stage: Int, joint: Recipe.PruneSpec? = nil) throws -> [LayerReport] {
        let at = "stages[\(stage)].quantize"
        let names = try Self.quantizeTargets(spec, in: model.forms, at: at)
        let states = names.map { state($0) }
        let calibrated = spec.method == .gptq ? names.filter { gptqApplies(layer($0)) } : []
        if let p = joint, let n = names.first(where: { !calibrated.contains($0) || !(layer($0).single is Maskable) }) {
            throw CompressionError.layer(n, "is \(layer(n).summary): pruning and GPTQ in one sweep (\(p.method.rawValue) with gptq) need a dense block linear")
        }
        for n in names where !calibrated.contains(n) {
            let l = layer(n)
            l.components = try l.components.compactMap { $0 as? QuantizableForm }.map { c -> WeightComponent in
                let q = try Self.quantized(c, spec.format, l)
                q.quantizeToNearest(params: model.params)
                return q
            }
        }
        if !calibrated.isEmpty { try gptqCalibrated(calibrated, spec, joint: joint, at: at) }
        model.releaseActivations()
        return zip(names, states).map { n, before in
            let method = calibrated.contains(n) ? (joint.map { "sparsegpt \(Int(($0.sparsity * 100).rounded()))% + " } ?? "") + "gptq \(spec.format.rawValue)"
                : "rtn \(spec.format.rawValue)" + (spec.method == .gptq ? " (gptq needs a dense or low-rank block linear)" : "")
            return report(stage: stage, n, method, before: before)
        }
    }

    /// The layers a quantize stage takes (its targets less `skip`), each checked to hold only
    /// quantizable forms.
    static func quantizeTargets(_ spec: Recipe.QuantizeSpec, in forms: GPT2Forms, at: String) throws -> [String] {
        let names = try resolve(spec.targets, in: forms.weightedLayers.map(\.name), at: at)
            .filter { n in !spec.skip.contains { globMatch($0.hasSuffix(".weight") ? String($0.dropLast(7)) : $0, n) } }
        for n in names {
            if let c = forms.layer(n)?.components.first(where: { !($0 is QuantizableForm) }) {
                throw CompressionError.layer(n, "is \(c.summary): \(c is QuantizedComponent ? "already quantized" : "that form cannot be quantized") (\(at))")
            }
        }
        return names
    }

    /// Whether GPTQ applies: a block linear whose weight is one dense (or masked) or low-rank component.
    func gptqApplies(_ l: WeightedLayer) -> Bool {
        l.multipliesActivations && (l.single is DenseComponent || l.single is LowRankComponent)
    }

    /// `c` of layer `l` wrapped in `format` (the embedding's blocks run along its rows' channels).
    static func quantized(_ c: QuantizableForm, _ format: QuantFormat, _ l: WeightedLayer) throws -> QuantizedComponent {
        do { return try QuantizedComponent(c, format: format, layer: l.name, transposed: !l.multipliesActivations) }
        catch let e as ModelError { throw CompressionError.layer(l.name, "\(e)") }
    }

    /// GPTQ of the layers `names` on the calibration, block by block; the per-layer sweeps are
    /// spread over ranks by cost and their grids broadcast.
    private func gptqCalibrated(_ names: [String], _ spec: Recipe.QuantizeSpec, joint: Recipe.PruneSpec?, at: String) throws {
        let model = self.model
        try calibrate(names, at: at) { _, layers, grams in
            let costs = layers.map { FactorizationPlan.sparseGPTUnits($0.inFeatures, $0.outFeatures) }
            let results = try distributedCompute(costs: costs, comm: comm) { j in
                try self.gptqSolve(layers[j], hessian: grams[layers[j].name]!, spec, joint: joint, params: model.params)
            }
            for (lin, r) in zip(layers, results) { try install(gptq: r, on: lin, spec.format) }
        }
    }

    /// One layer's GPTQ: for a dense weight [grid weight, blocks, (mask)]; for W0 W1ᵀ, W0 with the
    /// layer's Hessian H, then W1 with that of its own inputs x·Ŵ0, Ŵ0ᵀ H Ŵ0: [Ŵ0, blocks, Ŵ1, blocks].
    private func gptqSolve(_ lin: Linear, hessian h: [Double], _ spec: Recipe.QuantizeSpec, joint: Recipe.PruneSpec?,
                           params: ParameterSet) throws -> [Tensor] {
        func run(_ w: [Float], _ rows: Int, _ cols: Int, _ h: [Double], prune: Recipe.PruneSpec?) throws -> [Tensor] {
            let r = try gptq(weight: w, rows: rows, cols: cols, hessian: h, format: spec.format, activationOrder: spec.order == .activation,
                             blockSize: spec.blockSize, percdamp: spec.percdamp,
                             prune: prune.map { ($0.sparsity, $0.nm.map { ($0.n, $0.m) }) })
            return [try Tensor(shape: [rows, cols], data: r.weight), try Tensor(shape: [r.blocks.count], data: r.blocks.map(Float.init))]
                + (try r.mask.map { [try Tensor(shape: [rows, cols], data: $0)] } ?? [])
        }
        if let lr = lin.single as? LowRankComponent {
            let w0 = params.tensor(lr.w0Name), first = try run(w0.data, lin.inFeatures, lr.rank, h, prune: nil)
            // H1 = Ŵ0ᵀ H Ŵ0 [r, r] (Double).
            let q0 = first[0].data.map(Double.init), n = lin.inFeatures, r = lr.rank
            var hq = [Double](repeating: 0, count: n * r), h1 = [Double](repeating: 0, count: r * r)
            dgemm(m: n, n: r, k: n, a: h, b: q0, c: &hq)
            dgemm(transA: true, m: r, n: r, k: n, a: q0, b: hq, c: &h1)
            // W1 [out, r] as a linear over its rank inputs: [in = r, out] is its transpose.
            let w1t = try params.tensor(lr.w1Name).transposed()
            let second = try run(w1t.data, r, lin.outFeatures, h1, prune: nil)
            return [first[0], first[1], try second[0].transposed(), second[1]]
        }
        return try run(lin.denseWeight(params: params).data, lin.inFeatures, lin.outFeatures, h, prune: joint)
    }

    /// Puts a GPTQ result on its layer: the masters on the grid, the blocks as GPTQ chose them,
    /// and a joint sweep's mask.
    private func install(gptq r: [Tensor], on lin: Linear, _ format: QuantFormat) throws {
        func bytes(_ t: Tensor) -> [UInt8] { t.data.map { UInt8($0) } }
        guard let inner = lin.single as? QuantizableForm else { throw CompressionError.layer(lin.name, "cannot be quantized") }
        let q = try Self.quantized(inner, format, lin)
        if let lr = inner as? LowRankComponent {
            try model.params.set(lr.w0Name, r[0])
            try model.params.set(lr.w1Name, r[2])
            q.setBlocks(lr.w0Name, bytes(r[1]), params: model.params)
            q.setBlocks(lr.w1Name, bytes(r[3]), params: model.params)
        } else if let d = inner as? DenseComponent {
            try model.params.set(d.weightName, r[0])
            if r.count > 2 { d.mask = BitMask(r[2].data) }
            q.setBlocks(d.weightName, bytes(r[1]), params: model.params)
        }
        lin.components = [q]
        model.applyMasks()
    }
}
