import Foundation
import Tensor

/// Hugging Face directory I/O: `config.json`, `model.safetensors`, `vocab.json`, `merges.txt`;
/// compressed layers described in config.json's `compression` section.
extension GPT2 {
    /// Tokenizer and generation files copied alongside the weights when saving.
    public static let sideFiles = ["vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                                   "generation_config.json", "tokenizer.json", "added_tokens.json"]

    /// Buffers and causal-mask constants some checkpoints carry; they are not parameters.
    static func isIgnoredKey(_ key: String) -> Bool {
        key.hasSuffix(".attn.bias") || key.hasSuffix(".attn.masked_bias") || key == "lm_head.weight"
    }

    /// A model directory's config.json bytes; errors name the file.
    public static func readConfig(directory: URL) throws -> Data {
        let dir = directory.standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw FileError.io(dir.path, "model directory not found")
        }
        let configURL = dir.appendingPathComponent("config.json")
        guard let config = FileManager.default.contents(atPath: configURL.path) else { throw FileError.io(configURL.path, "missing or unreadable") }
        return config
    }

    /// The two files a model needs, read whole into memory (the broadcast path of
    /// `--no-shared-fs` and tests; `load(directory:)` reads tensors on demand instead).
    public static func readFiles(directory: URL) throws -> (config: Data, weights: Data) {
        let config = try readConfig(directory: directory)
        let weights = try WeightFiles.open(directory: directory)
        guard weights.files.count == 1, let url = weights.files.first?.url else {
            throw FileError.format(weights.url.path, "a sharded checkpoint cannot be sent as one file; use a shared filesystem or re-save it unsharded")
        }
        do { return (config, try Data(contentsOf: url)) } catch { throw FileError.io(url.path, "cannot read: \(error.localizedDescription)") }
    }

    /// Loads a model directory (plain HF GPT-2 or a Squeeze-compressed one; one weights file or
    /// Hugging Face's shards), reading each tensor straight into the parameter buffer. Weights
    /// holding NaN or ±Inf are refused, naming the tensor, unless `allowNonFinite`.
    public static func load(directory: URL, allowNonFinite: Bool = false) throws -> GPT2 {
        let config = try readConfig(directory: directory)
        return try load(directory: directory, config: config, weights: try WeightFiles.open(directory: directory), allowNonFinite: allowNonFinite)
    }

    /// Builds a model from the bytes of its config.json and model.safetensors (`directory` names
    /// them in messages and is remembered as the tokenizer's source).
    public static func load(directory: URL, config configData: Data, weights: Data, allowNonFinite: Bool = false) throws -> GPT2 {
        let url = directory.standardizedFileURL.appendingPathComponent("model.safetensors")
        let file = try SafeTensorsFile(data: weights, url: url)
        return try load(directory: directory, config: configData, weights: WeightFiles(file: file), allowNonFinite: allowNonFinite)
    }

    /// A model directory's parts checked against each other from the headers alone, before
    /// anything is allocated: the config, the layer forms (config.json's compression section;
    /// absent: all dense), the parameter layout, and the stored tensors (every one the layout
    /// needs there with its shape, and nothing else).
    struct CheckedFiles {
        let directory: URL
        let config: GPT2Config
        let layout: CompressionLayout
        let specs: [ParameterSet.Spec]
        let stored: StoredWeights
        var forms: GPT2Forms { layout.forms }

        init(directory: URL, config configData: Data, weights: WeightFiles) throws {
            self.directory = directory.standardizedFileURL
            let configURL = self.directory.appendingPathComponent("config.json")
            config = try GPT2Config(data: configData, url: configURL)
            let prefix = weights.entries.keys.contains { $0.hasPrefix("transformer.") } ? "transformer." : ""
            var shapes: [String: [Int]] = [:]
            for (key, e) in weights.entries where !isIgnoredKey(key) {
                shapes[key.hasPrefix(prefix) ? String(key.dropFirst(prefix.count)) : key] = e.shape
            }
            try config.check(against: shapes, prefix: prefix, config: configURL.path, weights: weights.url.path)
            layout = try CompressionLayout(config: config, path: configURL.path)
            specs = layout.forms.parameterLayout
            stored = StoredWeights(weights: weights, prefix: prefix, legacyKeys: layout.legacyKeys)
            try stored.check(forms: layout.forms, specs: specs)
        }

        /// The model on `params`, with what it remembers of its files.
        func model(params: ParameterSet) -> GPT2 {
            let model = GPT2(config: config, embedding: forms.embedding, blocks: forms.blocks, params: params)
            model.sourceDirectory = directory
            model.keyPrefix = stored.prefix
            model.storageDType = stored.weights.entries.values.first(where: { $0.dtype.isFloat })?.dtype ?? .f32
            model.compressionHistory = layout.history
            return model
        }

        /// Refuses NaN or ±Inf among the values of `params` (of the slots `only` names), naming
        /// the tensor, unless `allowed`.
        func checkFinite(_ params: ParameterSet, only names: Set<String>? = nil, allowed: Bool) throws {
            guard !allowed, let bad = params.firstNonFinite(only: names) else { return }
            throw FileError.nonFinite(stored.weights.url.path, tensor: stored.key(bad.name), value: bad.value, index: bad.index)
        }
    }

    /// Builds a model from its config bytes and weight files. Every config size is checked
    /// against the weights header before anything is allocated from it; `storage`, when given,
    /// receives the parameter values (e.g. node-shared memory; see `layout`).
    public static func load(directory: URL, config configData: Data, weights: WeightFiles, allowNonFinite: Bool = false,
                            storage: ((Int) throws -> (UnsafeMutableBufferPointer<Float>, AnyObject?, fill: Bool))? = nil) throws -> GPT2 {
        let files = try CheckedFiles(directory: directory, config: configData, weights: weights)
        // Values straight into the parameter buffer (or the caller's storage).
        let params: ParameterSet
        var fill = true
        if let storage {
            let (buffer, owner, mustFill) = try storage(ParameterSet.floats(for: files.specs))
            params = ParameterSet(layout: files.specs, storage: buffer, owner: owner)
            fill = mustFill
        } else {
            params = ParameterSet(layout: files.specs)
        }
        try files.stored.read(forms: files.forms, into: params, fill: fill)
        if fill { try files.checkFinite(params, allowed: allowNonFinite) }
        return files.model(params: params)
    }

    /// Saves to `directory` (created if needed): the weights (F32, F16 or BF16) as one
    /// model.safetensors, or as Hugging Face's shards with an index above `maxShardBytes`
    /// (`save_pretrained`'s 5 GB by default); config.json with the compression section when any
    /// layer is compressed; and the tokenizer files of the source directory. Every file is
    /// written atomically, the weights streamed from the parameter buffer.
    public func save(to directory: URL, dtype: SafeTensorsDType? = nil, tokenizerFrom: URL? = nil,
                     maxShardBytes: Int = 5_000_000_000) throws {
        let dir = directory.standardizedFileURL
        if let bad = params.firstNonFinite() {
            throw ModelError.input("refusing to write \(dir.path): tensor '\(bad.name)' holds \(bad.value) at element \(bad.index)")
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let dt = dtype ?? storageDType
        guard dt == .f32 || dt == .f16 || dt == .bf16 else { throw ModelError.unsupported("cannot save weights as \(dt.rawValue)") }
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        // In layout order: each component stores its parameters (in its own form) where its first one stands.
        var owner: [String: WeightComponent] = [:]
        for layer in weightedLayers { for c in layer.components { for p in c.parameters { owner[p.name] = c } } }
        var stored = Set<ObjectIdentifier>()
        for slot in params.slots {
            guard let c = owner[slot.name] else {
                writer.add(keyPrefix + slot.name, shape: slot.shape, pointer: params.value(slot.name), dtype: dt, owner: params)
                continue
            }
            if stored.insert(ObjectIdentifier(c)).inserted { c.store(in: &writer, key: { [keyPrefix] in keyPrefix + $0 }, params: params, dtype: dt) }
        }
        try writer.writeModel(to: dir, maxShardBytes: maxShardBytes)

        var obj = config.jsonObject()
        let layout = CompressionLayout(model: self)
        if layout.isCompressed {
            obj["compression"] = layout.json()
        } else {
            obj.removeValue(forKey: "compression")
        }
        // The dtype key transformers writes: "dtype" (v5) or "torch_dtype" (v4); keep whichever is there.
        let dtypeName = JSONValue.string(dt == .f32 ? "float32" : dt == .f16 ? "float16" : "bfloat16")
        let dtypeKeys = ["dtype", "torch_dtype"].filter { obj[$0] != nil }
        for k in dtypeKeys.isEmpty ? ["torch_dtype"] : dtypeKeys { obj[k] = dtypeName }
        let configURL = dir.appendingPathComponent("config.json")
        let newConfig = try encodeConfigJSON(obj)
        // Keep the source's bytes when nothing changed (bitwise round trip of an untouched config).
        if let src = sourceDirectory, let old = FileManager.default.contents(atPath: src.appendingPathComponent("config.json").path),
           let oldObj = try? JSONDecoder().decode([String: JSONValue].self, from: old), oldObj == obj {
            try writeAtomically(old, to: configURL)
        } else {
            try writeAtomically(newConfig, to: configURL)
        }
        if let src = tokenizerFrom ?? sourceDirectory, src.standardizedFileURL != dir {
            for f in Self.sideFiles {
                let from = src.appendingPathComponent(f)
                if let data = FileManager.default.contents(atPath: from.path) {
                    try writeAtomically(data, to: dir.appendingPathComponent(f))
                }
            }
        }
    }

    /// A hash of the config (with the layer forms) and every weight: equal on two ranks iff they
    /// hold the same model (up to hash collisions).
    public var contentHash: UInt64 {
        var obj = config.jsonObject()
        obj["compression"] = CompressionLayout(model: self).json()
        let configHash = ((try? encodeConfigJSON(obj)) ?? Data()).withUnsafeBytes { hashContents($0) }
        return hashContents(UnsafeRawBufferPointer(params.values), seed: configHash)
    }

    /// A dense copy: every layer's weight materialized (`squeeze export --dense`).
    public func densified() throws -> GPT2 {
        var tensors: [String: Tensor] = [:]
        tensors[TokenEmbedding.denseName] = embedding.denseWeight(params: params)
        for slot in params.slots where !slot.name.hasPrefix("wte.") {
            tensors[slot.name] = params.tensor(slot.name)
        }
        for lin in linears { tensors[lin.name + ".weight"] = lin.denseWeight(params: params) }
        let m = try GPT2(config: config, tensors: tensors)
        m.sourceDirectory = sourceDirectory
        m.keyPrefix = keyPrefix
        m.storageDType = storageDType
        return m
    }
}
