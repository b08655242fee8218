import Foundation
import Kernels

/// A GGUF file of llama.cpp's gpt2 layout (`GGUFLayout`) as a model: F32, F16 and BF16 weights
/// become dense weights (block linears transposed back to HF's Conv1D layout), Q8_0 and Q4_0 ones
/// `QuantizedComponent`s over the file's blocks; the tokenizer comes from the file's tokens and
/// merges. Everything is checked against the header before anything is allocated from it, and
/// every refusal names the file and the metadata key or tensor.
extension GPT2 {
    /// Loads a GPT-2 from a GGUF file (or from its bytes already in memory, `data`; `url` then
    /// names it). `storage`, as for `load(directory:config:weights:)`, may place the parameters
    /// (node-shared memory); without its `fill`, only the quantized blocks are read.
    public static func load(gguf url: URL, data: Data? = nil, allowNonFinite: Bool = false,
                            storage: ((Int) throws -> (UnsafeMutableBufferPointer<Float>, AnyObject?, fill: Bool))? = nil) throws -> GPT2 {
        let file = try data.map { try GGUFFile(data: $0, url: url) } ?? GGUFFile(url: url)
        return try load(gguf: file, allowNonFinite: allowNonFinite, storage: storage)
    }

    /// Builds a GPT-2 from a parsed GGUF file (see `load(gguf:data:allowNonFinite:storage:)`).
    public static func load(gguf file: GGUFFile, allowNonFinite: Bool = false,
                            storage: ((Int) throws -> (UnsafeMutableBufferPointer<Float>, AnyObject?, fill: Bool))? = nil) throws -> GPT2 {
        let header = try GGUFModelHeader(file)
        let forms = header.forms, specs = forms.parameterLayout
        let params: ParameterSet
        var fill = true
        if let storage {
            let (buffer, owner, mustFill) = try storage(ParameterSet.floats(for: specs))
            params = ParameterSet(layout: specs, storage: buffer, owner: owner)
            fill = mustFill
        } else {
            params = ParameterSet(layout: specs)
        }
        let path = file.url.path
        for (e, info) in header.tensors {
            if let q = header.quantized[e.name] {
                let bytes = [UInt8](try file.bytes(of: e.name))
                try q.checkBlocks(bytes, tensor: e.name, path: path)
                q.setBlocks(e.parameter, bytes, params: params, fill: fill)
                continue
            }
            guard fill else { continue }
            let values = try file.floats(of: e.name), p = params.value(e.parameter)
            guard e.role == .linear else { p.update(from: values, count: values.count); continue }
            // [out, in] rows in the file; HF's Conv1D weight is [in, out].
            let (rows, cols) = (info.shape[0], info.shape[1])
            for r in 0..<rows { for i in 0..<cols { p[i * rows + r] = values[r * cols + i] } }
        }
        let model = GPT2(config: header.config, embedding: forms.embedding, blocks: forms.blocks, params: params)
        if fill, !allowNonFinite, let bad = model.params.firstNonFinite() {
            let name = header.tensors.first { $0.0.parameter == bad.name }?.0.name ?? bad.name
            throw FileError.nonFinite(path, tensor: name, value: bad.value, index: bad.index)
        }
        model.storageDType = .f32
        return model
    }

    /// The layer forms of a GGUF model file, from its header alone (memory estimates).
    public static func forms(gguf url: URL) throws -> GPT2Forms { try GGUFModelHeader(try GGUFFile(url: url)).forms }

    /// The layer forms of a model directory or GGUF file (`GGUFLayout.isGGUF`).
    public static func forms(model url: URL) throws -> GPT2Forms {
        GGUFLayout.isGGUF(url) ? try forms(gguf: url) : try forms(directory: url)
    }
}

extension GPT2Tokenizer {
    /// The tokenizer of a GGUF model file: `tokenizer.ggml.model` "gpt2", its tokens, merges and
    /// token types (`init(ggufTokens:merges:tokenTypes:url:)`).
    public convenience init(gguf file: GGUFFile) throws {
        let t = try GGUFTokenizerFields(file)
        try self.init(ggufTokens: t.tokens, merges: t.merges, tokenTypes: t.types, url: file.url)
    }
}

/// The tokenizer fields of a GGUF file, present and of their types.
struct GGUFTokenizerFields {
    let tokens: [String], merges: [String], types: [Int]?

    init(_ file: GGUFFile) throws {
        typealias K = GGUFLayout.Key
        let fail = { (m: String) in FileError.format(file.url.path, m) }
        let model = try file.metadataValue(K.tokenizerModel, .string).string!
        guard model == "gpt2" else { throw fail("metadata '\(K.tokenizerModel)' is \(model.debugDescription): only GPT-2's byte-level BPE (\"gpt2\") is supported") }
        guard let tokens = try file.metadataValue(K.tokens, .array).stringArray else {
            throw fail("metadata '\(K.tokens)' must be an array of STRING, not of \(file.metadata[K.tokens]!.array!.elementType)")
        }
        guard let merges = try file.metadataValue(K.merges, .array).stringArray else {
            throw fail("metadata '\(K.merges)' must be an array of STRING, not of \(file.metadata[K.merges]!.array!.elementType)")
        }
        var types: [Int]?
        if file.metadata[K.tokenTypes] != nil {
            guard case .int32(let ts)? = try file.metadataValue(K.tokenTypes, .array).array else {
                throw fail("metadata '\(K.tokenTypes)' must be an array of INT32, not of \(file.metadata[K.tokenTypes]!.array!.elementType)")
            }
            guard ts.count == tokens.count else { throw fail("metadata '\(K.tokenTypes)' has \(ts.count) entries for \(tokens.count) tokens") }
            types = ts.map(Int.init)
        }
        for key in [K.bosID, K.eosID] where file.metadata[key] != nil {
            let id = try file.metadataValue(key, .uint32).int!
            guard id < tokens.count else { throw fail("metadata '\(key)' = \(id) is not a token id (\(tokens.count) tokens)") }
        }
        if file.metadata[K.tokenizerPre] != nil { _ = try file.metadataValue(K.tokenizerPre, .string) }
        self.tokens = tokens
        self.merges = merges
        self.types = types
    }
}

extension GGUFFile {
    /// Metadata `key`, which must be present and of `type`; errors name the file and the key.
    func metadataValue(_ key: String, _ type: GGUFValueType) throws -> GGUFValue {
        guard let v = metadata[key] else { throw FileError.format(url.path, "metadata '\(key)' is missing") }
        guard v.type == type else { throw FileError.format(url.path, "metadata '\(key)' must be \(type), not \(v.type)") }
        return v
    }
}

/// A GGUF model file's header checked against llama.cpp's gpt2 layout: the config from its
/// metadata, every tensor of the layout present with the shape the metadata gives it and a type
/// Squeeze reads, nothing else; the layer forms (Q8_0 and Q4_0 weights quantized).
struct GGUFModelHeader {
    let config: GPT2Config
    let forms: GPT2Forms
    /// The layout's tensors with the file's descriptions of them.
    let tensors: [(GGUFLayout.Entry, GGUFTensorInfo)]
    /// The quantized weights' components by GGUF tensor name.
    let quantized: [String: QuantizedComponent]

    init(_ file: GGUFFile) throws {
        config = try Self.config(file)
        _ = try GGUFTokenizerFields(file)   // present and of their types (the vocabulary is the token count)
        (tensors, quantized, forms) = try Self.tensors(file, config)
    }

    static func config(_ file: GGUFFile) throws -> GPT2Config {
        typealias K = GGUFLayout.Key
        let fail = { (m: String) in FileError.format(file.url.path, m) }
        guard file.metadata[K.architecture] != nil else { throw fail("metadata '\(K.architecture)' is missing (not a model file)") }
        let arch = try file.metadataValue(K.architecture, .string).string!
        guard arch == GGUFLayout.architecture else { throw fail("architecture \(arch.debugDescription) is not supported (only \"gpt2\")") }
        let limits = GPT2Config.limits
        func size(_ key: String, max limit: Int) throws -> Int {
            let value = try file.metadataValue(key, .uint32)
            let n = value.int ?? 0
            guard n > 0, n <= limit else { throw fail("metadata '\(key)' = \(n) must be between 1 and \(limit)") }
            return n
        }
        let tokens = try file.metadataValue(K.tokens, .array).array!.count
        guard tokens > 0, tokens <= limits.vocabSize else { throw fail("metadata '\(K.tokens)' has \(tokens) tokens (1 to \(limits.vocabSize))") }
        var c = GPT2Config(vocabSize: tokens, nPositions: try size(K.contextLength, max: limits.nPositions),
                           nEmbd: try size(K.embeddingLength, max: limits.nEmbd), nLayer: try size(K.blockCount, max: limits.nLayer),
                           nHead: try size(K.headCount, max: limits.nEmbd), nInner: try size(K.feedForwardLength, max: limits.nInner))
        guard c.nEmbd % c.nHead == 0 else {
            throw fail("metadata '\(K.embeddingLength)' = \(c.nEmbd) is not divisible by '\(K.headCount)' = \(c.nHead)")
        }
        let eps = try file.metadataValue(K.layerNormEpsilon, .float32).double!
        guard eps > 0, eps < 1 else { throw fail("metadata '\(K.layerNormEpsilon)' = \(eps) must be in (0, 1)") }
        c.layerNormEpsilon = Float(eps)
        return c
    }

    static func tensors(_ file: GGUFFile, _ c: GPT2Config) throws
        -> ([(GGUFLayout.Entry, GGUFTensorInfo)], [String: QuantizedComponent], GPT2Forms) {
        typealias K = GGUFLayout.Key
        let fail = { (m: String) in FileError.format(file.url.path, m) }
        let entries = GGUFLayout.entries(c)
        let forms = GPT2Forms(config: c)
        var out: [(GGUFLayout.Entry, GGUFTensorInfo)] = [], quantized: [String: QuantizedComponent] = [:]
        let sizes = "\(K.embeddingLength) \(c.nEmbd), \(K.contextLength) \(c.nPositions), \(K.feedForwardLength) \(c.nInner), \(c.vocabSize) tokens"
        for e in entries {
            guard let t = try? file.tensor(named: e.name) else {
                throw fail("tensor '\(e.name)' is missing (\(K.blockCount) = \(c.nLayer))")
            }
            guard t.shape == e.shape else {
                throw fail("tensor '\(e.name)' has ggml dims \(t.dims), expected \(Array(e.shape.reversed())) from the metadata (\(sizes))")
            }
            switch t.type {
            case .f32, .f16, .bf16: break
            case .q8_0 where e.quantizable, .q4_0 where e.quantizable:
                let layer = forms.layer(e.layer!)!
                let dense = DenseComponent(weightName: e.parameter, inFeatures: layer.inFeatures, outFeatures: layer.outFeatures)
                let q = try QuantizedComponent(dense, format: t.type == .q8_0 ? .q8_0 : .q4_0, layer: layer.name,
                                               transposed: e.role == .tokenEmbedding)
                layer.components = [q]
                quantized[e.name] = q
            case .q8_0, .q4_0:
                throw fail("tensor '\(e.name)' is \(t.type): norms, biases and position_embd must be F32, F16 or BF16")
            default:
                throw fail("tensor '\(e.name)' is \(t.type), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0)")
            }
            out.append((e, t))
        }
        let known = Set(entries.map(\.name))
        for t in file.tensors where !known.contains(t.name) {
            guard t.name == GGUFLayout.outputName else {
                throw fail("unexpected tensor '\(t.name)' (not part of a gpt2 model with \(K.blockCount) = \(c.nLayer))")
            }
            let embd = out[0].1
            guard t.type == embd.type, t.dims == embd.dims, try file.bytes(of: t.name) == file.bytes(of: embd.name) else {
                throw fail("tensor '\(t.name)': a separate output head (not tied to token_embd.weight) is not supported")
            }
        }
        return (out, quantized, forms)
    }
}
