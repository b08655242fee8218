import Model

extension CompressionJob {
    /// The forms `input` will have after stages 0...`stage` of `recipe`, as far as they are known
    /// before running — what the memory plan sizes each distillation's activations (component
    /// state included) by. Ranks from a spectrum (`energy`, `allocate: sensitivity`) count as
    /// full; an automatic Kronecker shape counts as the admissible candidate whose state is
    /// largest (an upper bound; with sensitivity, admissible within the whole layer's size).
    /// Whitened stages take the same forms as plain ones (their calibration changes values only).
    func plannedForms(_ input: GPT2Forms, recipe: Recipe, through stage: Int) throws -> GPT2Forms {
        let forms = GPT2Forms(copying: input)
        let names = forms.weightedLayers.map(\.name)
        let rows = 1024   // any row count: the state per row decides which candidate is largest
        for st in recipe.stages where st.index <= stage {
            try plan(st.method, forms, names: names, stage: st.index, rows: rows)
            // Quantized forms: checked now (a matrix whose inputs are not a multiple of 32 is
            // refused before any stage runs, naming the layer; a Kronecker layer's at run time).
            if let q = st.quantize {
                for n in try Compressor.quantizeTargets(q, in: forms, at: "stages[\(st.index)].quantize") {
                    let l = forms.layer(n)!
                    guard !(l.single is KroneckerComponent) else { continue }   // its shape may be decided at run time
                    l.components = try l.components.compactMap { $0 as? QuantizableForm }.map { try Compressor.quantized($0, q.format, l) }
                }
            }
        }
        return forms
    }

    /// Replaces the targets of one stage's method in `forms` by their planned forms.
    private func plan(_ method: Recipe.Method, _ forms: GPT2Forms, names: [String], stage: Int, rows: Int) throws {
        switch method {
        case .prune, .distillOnly: return
        case .lowrank(let spec):
            for layer in try Compressor.resolve(spec.targets, in: names, at: "stages[\(stage)].lowrank").compactMap({ forms.layer($0) })
            where !(layer.single is FactorizedForm) {
                let r = LowRank.needsSpectrum(spec.rule) || spec.allocate == .sensitivity ? min(layer.inFeatures, layer.outFeatures)
                    : LowRank.rank(for: spec.rule, rows: layer.inFeatures, cols: layer.outFeatures, singularValues: [])
                var comps: [WeightComponent] = [LowRankComponent(layer: layer.name, inFeatures: layer.inFeatures, outFeatures: layer.outFeatures, rank: r)]
                if spec.sparseResidual != nil {
                    comps.append(DenseComponent(weightName: layer.name + ".sparse", inFeatures: layer.inFeatures, outFeatures: layer.outFeatures))
                }
                layer.components = comps
            }
        case .kronecker(let spec):
            for layer in try Compressor.resolve(spec.targets, in: names, at: "stages[\(stage)].kronecker").compactMap({ forms.layer($0) }) {
                let (m, n) = (layer.inFeatures, layer.outFeatures), extra = spec.scale ? 1 : 0
                // Terms by sensitivity may take up to the whole layer's size.
                let budget = Int((spec.allocate == .sensitivity ? 1 : spec.budget) * Double(m * n))
                var candidates: [(KroneckerShape, Int)]
                if let f = spec.factors, let t = spec.terms {
                    candidates = [(KroneckerShape(m1: f.m1, n1: f.n1, m2: m / f.m1, n2: n / f.n1), t)]
                } else {
                    candidates = NearestKronecker.autoCandidates(rows: m, cols: n, terms: spec.terms, budget: budget - (spec.terms ?? 0) * extra,
                                                                 perTermExtra: extra, maxCandidates: spec.terms == nil ? 12 : 8)
                }
                let comps = candidates.map { KroneckerComponent(prefix: layer.name, shape: $0.0, terms: $0.1, scaled: spec.scale) }
                if let big = comps.max(by: { $0.savedFloats(rows: rows) + $0.scratchFloats(rows: rows) < $1.savedFloats(rows: rows) + $1.scratchFloats(rows: rows) }) {
                    layer.components = [big]
                }
            }
        }
    }
}

extension GPT2Forms {
    /// New layers holding the same components (so replacing a layer's components leaves `other`
    /// as it was).
    init(copying other: GPT2Forms) {
        let e = TokenEmbedding(vocab: other.config.vocabSize, channels: other.config.nEmbd)
        e.components = other.embedding.components
        let blocks = other.blocks.map { b -> Block in
            let copy = Block(index: b.index, config: other.config)
            for (c, o) in zip(copy.linears, b.linears) { c.components = o.components }
            return copy
        }
        self.init(config: other.config, embedding: e, blocks: blocks)
    }
}
