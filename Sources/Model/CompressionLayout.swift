import Foundation

/// The `compression` section of a compressed model's config.json: what each layer became.
///
/// ```json
/// "compression": {
///   "format": "squeeze/1",
///   "wte": {"form": "lowrank", "rank": 256},
///   "layers": {
///     "h.0.mlp.c_fc":  [{"kind": "dense", "sparse": true}],
///     "h.0.attn.c_attn": [{"kind": "lowrank", "rank": 96}],
///     "h.1.mlp.c_fc":  [{"kind": "kronecker", "m1": 24, "n1": 48, "m2": 32, "n2": 64, "terms": 1}],
///     "h.2.mlp.c_fc":  [{"kind": "lowrank", "rank": 64}, {"kind": "dense", "sparse": true, "name": "sparse"}]
///   },
///   "history": [...]
/// }
/// ```
/// Sparse weights are stored as `<name>.bitmask` (U8, one bit per element) and `<name>.values`.
public struct CompressionLayout {
    public static let format = "squeeze/1"
    public var embedding: TokenEmbedding
    public var layers: [String: [WeightComponent]] = [:]
    public var history: [JSONValue] = []
    public var isCompressed: Bool

    /// Parses the section of a config (all dense when absent).
    init(config: GPT2Config, path: String) throws {
        embedding = TokenEmbedding(vocab: config.vocabSize, channels: config.nEmbd)
        guard let section = config.extra["compression"] else { isCompressed = false; return }
        isCompressed = true
        guard let obj = section.objectValue else { throw FileError.format(path, "'compression' must be an object") }
        guard obj["format"]?.stringValue == Self.format else {
            throw FileError.format(path, "compression.format must be '\(Self.format)', got \(obj["format"].map { "\($0)" } ?? "nothing")")
        }
        history = obj["history"]?.arrayValue ?? []
        if let wte = obj["wte"]?.objectValue {
            if let list = wte["components"]?.arrayValue {
                // Any weight form, as the block linears (written since squeeze/1 gained it).
                guard !list.isEmpty else { throw FileError.format(path, "compression.wte.components must be a non-empty list") }
                embedding.components = try list.map { item in
                    guard let c = item.objectValue else { throw FileError.format(path, "compression.wte: each component must be an object") }
                    do {
                        return try decodeWeightComponent(c, layer: "wte", inFeatures: config.vocabSize, outFeatures: config.nEmbd, at: "compression.wte")
                    } catch let e as ModelError { throw FileError.format(path, e.description) }
                }
            } else {
                switch wte["form"]?.stringValue {
                case "lowrank":
                    guard let r = wte["rank"]?.intValue, r > 0, r <= min(config.vocabSize, config.nEmbd) else {
                        throw FileError.format(path, "compression.wte: lowrank needs 1 <= rank <= \(min(config.vocabSize, config.nEmbd))")
                    }
                    embedding = TokenEmbedding(vocab: config.vocabSize, channels: config.nEmbd, rank: r)
                case "sparse", "dense": break  // the mask comes from the bitmask in model.safetensors
                default: throw FileError.format(path, "compression.wte.form must be dense, sparse or lowrank (or a components list)")
                }
            }
        }
        let C = config.nEmbd, H = config.nInner
        let dims: (String) -> (Int, Int)? = { name in
            if name.hasSuffix(".attn.c_attn") { return (C, 3 * C) }
            if name.hasSuffix(".attn.c_proj") { return (C, C) }
            if name.hasSuffix(".mlp.c_fc") { return (C, H) }
            if name.hasSuffix(".mlp.c_proj") { return (H, C) }
            return nil
        }
        for (name, value) in obj["layers"]?.objectValue ?? [:] {
            let where_ = "compression.layers['\(name)']"
            // Only canonical names "h.<index>.<layer>": "h.-1.…", "h.01.…" or "h.0.x.mlp.c_fc" name no
            // layer any block would look up.
            let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
            guard let (i, o) = dims(name), parts.count == 3, parts[0] == "h", let idx = Int(parts[1]), 0 <= idx, idx < config.nLayer,
                  "\(idx)" == parts[1], ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"].contains(parts[2]) else {
                throw FileError.format(path, "\(where_): not a linear layer of this model")
            }
            guard let list = value.arrayValue, !list.isEmpty else { throw FileError.format(path, "\(where_) must be a non-empty list of components") }
            var comps: [WeightComponent] = []
            for item in list {
                guard let c = item.objectValue else { throw FileError.format(path, "\(where_): each component must be an object") }
                do { comps.append(try decodeWeightComponent(c, layer: name, inFeatures: i, outFeatures: o, at: where_)) } catch let e as ModelError {
                    throw FileError.format(path, e.description)
                }
            }
            layers[name] = comps
        }
    }

    /// Describes a model's current layer forms.
    init(model: GPT2) {
        embedding = model.embedding
        history = model.compressionHistory
        var compressed = model.embedding.form != "dense"
        for lin in model.linears {
            layers[lin.name] = lin.components
            if lin.form != "dense" { compressed = true }
        }
        isCompressed = compressed || !history.isEmpty
    }

    /// The JSON section.
    func json() -> JSONValue {
        var obj: [String: JSONValue] = ["format": .string(Self.format)]
        // The forms older files name directly keep their short entry; any other is a components list.
        var wte: [String: JSONValue] = ["form": .string(embedding.form)]
        let legacy = embedding.components.count == 1
            && (embedding.components[0] is DenseComponent || (embedding.components[0] as? LowRankComponent)?.prefix == "wte")
        if let r = embedding.rank, legacy { wte["rank"] = .number(Double(r)) }
        if !legacy { wte["components"] = .array(embedding.components.map { .object($0.configEntry) }) }
        obj["wte"] = .object(wte)
        var ls: [String: JSONValue] = [:]
        for (name, comps) in layers {
            if comps.count == 1, let d = comps[0] as? DenseComponent, d.bits == nil { continue }
            ls[name] = .array(comps.map { .object($0.configEntry) })
        }
        obj["layers"] = .object(ls)
        if !history.isEmpty { obj["history"] = .array(history) }
        return .object(obj)
    }
}
