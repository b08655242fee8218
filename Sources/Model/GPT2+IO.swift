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

    /// The two files a model needs, read from disk (memory-mapped weights); errors name the file.
    public static func readFiles(directory: URL) throws -> (config: Data, weights: Data) {
        let dir = directory.standardizedFileURL
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir), isDir.boolValue else {
            throw FileError.io(dir.path, "model directory not found")
        }
        let configURL = dir.appendingPathComponent("config.json"), weightsURL = dir.appendingPathComponent("model.safetensors")
        guard let config = FileManager.default.contents(atPath: configURL.path) else { throw FileError.io(configURL.path, "missing or unreadable") }
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            if FileManager.default.fileExists(atPath: dir.appendingPathComponent("pytorch_model.bin").path) {
                throw FileError.io(weightsURL.path, "missing; only safetensors weights are supported (convert pytorch_model.bin with transformers' save_pretrained(safe_serialization=True))")
            }
            throw FileError.io(weightsURL.path, "missing")
        }
        do { return (config, try Data(contentsOf: weightsURL, options: .alwaysMapped)) } catch {
            throw FileError.io(weightsURL.path, "cannot read: \(error.localizedDescription)")
        }
    }

    /// Loads a model directory (plain HF GPT-2 or a Squeeze-compressed one).
    public static func load(directory: URL) throws -> GPT2 {
        let (config, weights) = try readFiles(directory: directory)
        return try load(directory: directory, config: config, weights: weights)
    }

    /// Builds a model from the bytes of its config.json and model.safetensors (`directory` names
    /// them in messages and is remembered as the tokenizer's source).
    public static func load(directory: URL, config configData: Data, weights: Data) throws -> GPT2 {
        let dir = directory.standardizedFileURL
        let configURL = dir.appendingPathComponent("config.json")
        let config = try GPT2Config(data: configData, url: configURL)
        let weightsURL = dir.appendingPathComponent("model.safetensors")
        let file = try SafeTensorsFile(data: weights, url: weightsURL)
        let prefix = file.entries.keys.contains { $0.hasPrefix("transformer.") } ? "transformer." : ""

        // Layer forms from the compression section (absent: all dense).
        let layout = try CompressionLayout(config: config, path: configURL.path)
        let embedding = layout.embedding
        let blocks = (0..<config.nLayer).map { Block(index: $0, config: config) }
        for b in blocks {
            for lin in b.linears {
                if let comps = layout.layers[lin.name] { lin.components = comps }
            }
        }

        // Read every tensor the layout needs; sparse weights are a bitmask plus values.
        var tensors: [String: Tensor] = [:]
        var masks: [String: [Float]] = [:]
        let model = try GPT2(config: config, tensorsProvider: { name, shape in
            let key = prefix + name
            if file.entries[key] != nil {
                let t = try file.tensor(key)
                guard t.shape == shape else { throw FileError.format(weightsURL.path, "tensor '\(key)' has shape \(t.shape), expected \(shape)") }
                return t
            }
            if file.entries[key + ".bitmask"] != nil {
                let (t, m) = try readSparse(file, key: key, shape: shape)
                masks[name] = m
                return t
            }
            throw FileError.format(weightsURL.path, "tensor '\(key)' is missing")
        }, embedding: embedding, blocks: blocks, collected: &tensors)

        // Restore masks onto their components.
        if let m = masks[TokenEmbedding.denseName] { model.embedding.mask = m }
        for lin in model.linears {
            for case let d as DenseComponent in lin.components { if let m = masks[d.weightName] { d.mask = m } }
        }
        model.applyMasks()

        // Refuse keys we do not understand (a different architecture, a typo'd export).
        let known = Set(model.params.slots.map { prefix + $0.name })
        for key in file.entries.keys where !known.contains(key) && !isIgnoredKey(key) && !isIgnoredKey(String(key.dropFirst(prefix.count))) {
            let base = key.hasSuffix(".bitmask") ? String(key.dropLast(8)) : key.hasSuffix(".values") ? String(key.dropLast(7)) : key
            if known.contains(base) { continue }
            throw FileError.format(weightsURL.path, "unexpected tensor '\(key)' (not part of a GPT-2 model with this config)")
        }
        model.sourceDirectory = dir
        model.keyPrefix = prefix
        model.storageDType = file.entries.values.first(where: { $0.dtype.isFloat })?.dtype ?? .f32
        model.compressionHistory = layout.history
        return model
    }

    /// Saves to `directory` (created if needed): model.safetensors (F32 or F16), config.json with
    /// the compression section when any layer is compressed, and the tokenizer files of the
    /// source directory. Every file is written atomically.
    public func save(to directory: URL, dtype: SafeTensorsDType? = nil, tokenizerFrom: URL? = nil) throws {
        let dir = directory.standardizedFileURL
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let dt = dtype ?? storageDType
        guard dt == .f32 || dt == .f16 || dt == .bf16 else { throw ModelError.unsupported("cannot save weights as \(dt.rawValue)") }
        var writer = SafeTensorsWriter(metadata: ["format": "pt"])
        var sparse: [String: [Float]] = [:]
        if let m = embedding.mask { sparse[TokenEmbedding.denseName] = m }
        for lin in linears { for case let d as DenseComponent in lin.components { if let m = d.mask { sparse[d.weightName] = m } } }
        for slot in params.slots {
            let t = params.tensor(slot.name)
            let key = keyPrefix + slot.name
            if let mask = sparse[slot.name] {
                let (bits, values) = packSparse(t.data, mask: mask)
                writer.add(key + ".bitmask", shape: [bits.count], bytes: bits, dtype: .u8)
                writer.add(key + ".values", shape: [values.count], values: values, dtype: dt)
            } else {
                writer.add(key, t, dtype: dt)
            }
        }
        try writer.write(to: dir.appendingPathComponent("model.safetensors"))

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

    /// A dense copy: every layer's weight materialised (`squeeze export --dense`).
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

    /// Builds a model asking `provider` for each parameter of the layout (with its expected shape).
    convenience init(config: GPT2Config, tensorsProvider: (String, [Int]) throws -> Tensor,
                     embedding: TokenEmbedding, blocks: [Block], collected: inout [String: Tensor]) throws {
        let shapes = expectedShapes(config: config, embedding: embedding, blocks: blocks)
        for (name, shape) in shapes { collected[name] = try tensorsProvider(name, shape) }
        try self.init(config: config, tensors: collected, embedding: embedding, blocks: blocks)
    }
}

/// Expected shape of every parameter for the given layer forms.
func expectedShapes(config: GPT2Config, embedding: TokenEmbedding, blocks: [Block]) -> [(String, [Int])] {
    let C = config.nEmbd, V = config.vocabSize
    var out: [(String, [Int])] = []
    if let r = embedding.rank { out += [(TokenEmbedding.w0Name, [V, r]), (TokenEmbedding.w1Name, [C, r])] }
    else { out.append((TokenEmbedding.denseName, [V, C])) }
    out.append(("wpe.weight", [config.nPositions, C]))
    for b in blocks {
        out += [(b.ln1.w, [C]), (b.ln1.b, [C]), (b.ln2.w, [C]), (b.ln2.b, [C])]
        for lin in b.linears {
            out.append((lin.biasName, [lin.outFeatures]))
            for comp in lin.components {
                switch comp {
                case let d as DenseComponent: out.append((d.weightName, [d.inFeatures, d.outFeatures]))
                case let l as LowRankComponent: out += [(l.w0Name, [l.inFeatures, l.rank]), (l.w1Name, [l.outFeatures, l.rank])]
                case let k as KroneckerComponent:
                    let s = k.shape
                    for i in 0..<k.terms {
                        if let r = k.factorRankA { out += [(k.name(i, "a0"), [s.m1, r]), (k.name(i, "a1"), [s.n1, r])] }
                        else { out.append((k.name(i, "a"), [s.m1, s.n1])) }
                        if let r = k.factorRankB { out += [(k.name(i, "b0"), [s.m2, r]), (k.name(i, "b1"), [s.n2, r])] }
                        else { out.append((k.name(i, "b"), [s.m2, s.n2])) }
                    }
                default: break
                }
            }
        }
    }
    out += [("ln_f.weight", [C]), ("ln_f.bias", [C])]
    return out
}

/// Packs a masked matrix as a little-endian bitmask (bit i of byte i/8 = element i kept) and
/// the kept values in row-major order.
public func packSparse(_ values: [Float], mask: [Float]) -> (bits: [UInt8], values: [Float]) {
    var bits = [UInt8](repeating: 0, count: (values.count + 7) / 8)
    var kept: [Float] = []
    kept.reserveCapacity(values.count / 2)
    for i in values.indices where mask[i] != 0 {
        bits[i >> 3] |= UInt8(1 << (i & 7))
        kept.append(values[i])
    }
    return (bits, kept)
}

/// Reads `<key>.bitmask` + `<key>.values` back into a dense tensor and its 0/1 mask.
func readSparse(_ file: SafeTensorsFile, key: String, shape: [Int]) throws -> (Tensor, [Float]) {
    // The expected shape comes from config.json: its product can overflow (e.g. [vocab_size, n_embd]).
    guard let n = Tensor.elementCount(shape) else {
        throw FileError.format(file.url.path, "tensor '\(key)': shape \(shape) from config.json has more elements than Int can count")
    }
    let bits = try file.bytes(key + ".bitmask")
    let bytes = n / 8 + (n % 8 == 0 ? 0 : 1)
    guard bits.count == bytes else {
        throw FileError.format(file.url.path, "tensor '\(key).bitmask' has \(bits.count) bytes, expected \(bytes) for shape \(shape)")
    }
    let values = try file.floats(key + ".values")
    var dense = [Float](repeating: 0, count: n), mask = [Float](repeating: 0, count: n)
    var j = 0
    for i in 0..<n where bits[i >> 3] & UInt8(1 << (i & 7)) != 0 {
        guard j < values.count else { throw FileError.format(file.url.path, "tensor '\(key).values' has fewer values than the bitmask's set bits") }
        dense[i] = values[j]; mask[i] = 1; j += 1
    }
    guard j == values.count else {
        throw FileError.format(file.url.path, "tensor '\(key).values' has \(values.count) values, the bitmask sets \(j)")
    }
    return (try Tensor(shape: shape, data: dense), mask)
}
