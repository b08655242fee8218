import Kernels

/// A model's tensors in its weight files: the key each parameter is stored under (the
/// checkpoint's `transformer.` prefix, older files' names) and the checks made from the headers
/// alone, before anything is allocated. The components read and check their own tensors (a
/// masked weight is a bitmask and its kept values).
struct StoredWeights {
    let weights: WeightFiles
    let prefix: String
    let legacyKeys: [String: String]

    /// The key parameter `name` is stored under.
    func key(_ name: String) -> String { prefix + (legacyKeys[name] ?? name) }

    /// Parameters no component owns (positions, LayerNorms, biases), in layout order.
    func plain(_ forms: GPT2Forms, _ specs: [ParameterSet.Spec]) -> [ParameterSet.Spec] {
        let owned = Set(forms.weightedLayers.flatMap { $0.components.flatMap { $0.parameters.map(\.name) } })
        return specs.filter { !owned.contains($0.name) }
    }

    /// Every tensor the forms need is there with its shape, and nothing else is.
    func check(forms: GPT2Forms, specs: [ParameterSet.Spec]) throws {
        for s in plain(forms, specs) { try weights.expect(key(s.name), shape: s.shape) }
        for layer in forms.weightedLayers { for c in layer.components { try c.checkStored(in: weights, key: key) } }
        // Refuse keys we do not understand (a different architecture, a typo'd export).
        let known = Set(specs.map { key($0.name) })
        for k in weights.entries.keys where !known.contains(k) && !GPT2.isIgnoredKey(k) && !GPT2.isIgnoredKey(String(k.dropFirst(prefix.count))) {
            let suffixes = [".bitmask", ".values"] + QuantFormat.allCases.map { "." + $0.rawValue }
            if let s = suffixes.first(where: { k.hasSuffix($0) }), known.contains(String(k.dropLast(s.count))) { continue }
            throw FileError.format(weights.url.path, "unexpected tensor '\(k)' (not part of a GPT-2 model with this config)")
        }
    }

    /// Reads every parameter into `params` (without `fill`, only what components keep themselves,
    /// such as masks: the values are already there, e.g. in a node-shared window).
    func read(forms: GPT2Forms, into params: ParameterSet, fill: Bool) throws {
        if fill { for s in plain(forms, params.slots.map { ($0.name, $0.shape, $0.decay) }) { try weights.readFloats(key(s.name), into: params.value(s.name)) } }
        for layer in forms.weightedLayers { for c in layer.components { try c.load(from: weights, key: key, into: params, fill: fill) } }
    }
}

extension WeightFiles {
    /// Throws unless tensor `key` exists with `shape` (naming the file and the tensor).
    public func expect(_ key: String, shape: [Int]) throws {
        guard let e = entries[key] else { throw FileError.format(url.path, "tensor '\(key)' is missing") }
        guard e.shape == shape else { throw FileError.format(url.path, "tensor '\(key)' has shape \(e.shape), expected \(shape)") }
    }
}
