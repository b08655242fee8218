import Foundation
import Kernels

extension PackedGPT2 {
    /// Loads a model directory straight into its packed form, for a process that only runs it
    /// forward (eval, generate). Each block linear's stored tensors are read into a buffer of
    /// their own and packed from there (`WeightComponent.packedFromStored`: F32 values packed in
    /// place keep that buffer, every other form frees it once packed), so a quantized, sparse or
    /// BF16 model never holds a dense F32 copy of its weights. The model's parameter buffer holds
    /// what is read where it lies: positions, LayerNorms, biases and the tied embedding; its
    /// block-linear slots are never written, hence never resident. Peak memory: the packed
    /// weights, the embedding, and one layer's stored tensors in F32 at a time.
    public static func load(directory: URL, precision: PackedPrecision = .f32, allowNonFinite: Bool = false) throws -> PackedGPT2 {
        let configData = try GPT2.readConfig(directory: directory)
        let files = try GPT2.CheckedFiles(directory: directory, config: configData, weights: try WeightFiles.open(directory: directory))
        let forms = files.forms, stored = files.stored
        let params = ParameterSet(layout: files.specs)
        // Read where they lie: the parameters no component owns, and the embedding's.
        var filled = Set<String>()
        for s in stored.plain(forms, files.specs) {
            try stored.weights.readFloats(stored.key(s.name), into: params.value(s.name))
            filled.insert(s.name)
        }
        for c in forms.embedding.components {
            try c.load(from: stored.weights, key: stored.key, into: params, fill: true)
            filled.formUnion(c.parameters.map(\.name))
        }
        try files.checkFinite(params, only: filled, allowed: allowNonFinite)
        // Block linears: packed from the files, one component at a time.
        var prepacked: [ObjectIdentifier: PackedOperator] = [:]
        for lin in forms.blocks.flatMap(\.linears) {
            for c in lin.components {
                do {
                    prepacked[ObjectIdentifier(c)] = try c.packedFromStored(in: stored.weights, key: stored.key, precision: precision,
                                                                            allowNonFinite: allowNonFinite)
                } catch let e as ModelError { throw ModelError.input("layer \(lin.name): \(e)") }
            }
        }
        return try PackedGPT2(files.model(params: params), precision: precision, prepacked: prepacked)
    }
}
