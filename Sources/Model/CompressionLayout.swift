import Foundation

/// The `compression` section of a compressed model's config.json: what each layer became.
///
/// ```json
/// "compression": {
///   "format": "squeeze/1",
///   "wte": {"form": "sparse"},
///   "layers": {
///     "h.0.mlp.c_fc":  [{"kind": "dense", "sparse": true}],
///     "h.0.attn.c_attn": [{"kind": "lowrank", "rank": 96}],
///     "h.1.mlp.c_fc":  [{"kind": "kronecker", "m1": 24, "n1": 48, "m2": 32, "n2": 64, "terms": 1}],
///     "h.2.mlp.c_fc":  [{"kind": "lowrank", "rank": 64}, {"kind": "dense", "sparse": true, "name": "sparse"}]
///   },
///   "history": [...]
/// }
/// ```
/// `wte` is `{"form": "dense" | "sparse"}` for one maskable weight, else `{"components": [...]}`
/// like a linear's. Files of an earlier squeeze/1 may say `{"form": "lowrank", "rank": r}` with
/// tensors `wte.w0` / `wte.w1`: they load as the components list, whose tensors are
/// `wte.lowrank.w0` / `wte.lowrank.w1` (`legacyKeys` maps the names). Sparse weights are stored as
/// `<name>.bitmask` (U8, one bit per element) and `<name>.values`.
public struct CompressionLayout {
    public static let format = "squeeze/1"
    public var forms: GPT2Forms
    public var history: [JSONValue] = []
    public var isCompressed: Bool
    /// Parameter name -> the key an older file stores it under.
    public var legacyKeys: [String: String] = [:]

    /// Parses the section of a config (all dense when absent) into the model's forms.
    init(config: GPT2Config, path: String) throws {
        forms = GPT2Forms(config: config)
        guard let section = config.extra["compression"] else { isCompressed = false; return }
        isCompressed = true
        guard let obj = section.objectValue else { throw FileError.format(path, "'compression' must be an object") }
        guard obj["format"]?.stringValue == Self.format else {
            throw FileError.format(path, "compression.format must be '\(Self.format)', got \(obj["format"].map { "\($0)" } ?? "nothing")")
        }
        history = obj["history"]?.arrayValue ?? []
        if let wte = obj["wte"]?.objectValue { try decodeEmbedding(wte, config: config, path: path) }
        for (name, value) in obj["layers"]?.objectValue ?? [:] {
            let where_ = "compression.layers['\(name)']"
            guard let (l, kind) = BlockLinear.parse(name, layers: config.nLayer) else {
                throw FileError.format(path, "\(where_): not a linear layer of this model")
            }
            let lin = forms.blocks[l].linear(kind)
            lin.components = try Self.decodeList(value, layer: name, inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, at: where_, path: path)
        }
    }

    private mutating func decodeEmbedding(_ wte: [String: JSONValue], config: GPT2Config, path: String) throws {
        let (V, C) = (config.vocabSize, config.nEmbd)
        if let list = wte["components"] {
            forms.embedding.components = try Self.decodeList(list, layer: "wte", inFeatures: V, outFeatures: C, at: "compression.wte", path: path)
            return
        }
        switch wte["form"]?.stringValue {
        case "lowrank":
            guard let r = wte["rank"]?.intValue, r > 0, r <= min(V, C) else {
                throw FileError.format(path, "compression.wte: lowrank needs 1 <= rank <= \(min(V, C))")
            }
            let c = LowRankComponent(layer: "wte", inFeatures: V, outFeatures: C, rank: r)
            forms.embedding.components = [c]
            legacyKeys = [c.w0Name: "wte.w0", c.w1Name: "wte.w1"]
        case "sparse", "dense": break  // the mask comes from the bitmask in model.safetensors
        default: throw FileError.format(path, "compression.wte.form must be dense, sparse or lowrank (or a components list)")
        }
    }

    private static func decodeList(_ value: JSONValue, layer: String, inFeatures: Int, outFeatures: Int, at: String, path: String) throws -> [WeightComponent] {
        guard let list = value.arrayValue, !list.isEmpty else { throw FileError.format(path, "\(at) must be a non-empty list of components") }
        return try list.map { item in
            guard let c = item.objectValue else { throw FileError.format(path, "\(at): each component must be an object") }
            do { return try decodeWeightComponent(c, layer: layer, inFeatures: inFeatures, outFeatures: outFeatures, at: at) }
            catch let e as ModelError { throw FileError.format(path, e.description) }
        }
    }

    /// Describes a model's current layer forms.
    init(model: GPT2) {
        forms = model.forms
        history = model.compressionHistory
        isCompressed = !history.isEmpty || forms.weightedLayers.contains { !$0.isUncompressed }
    }

    /// The JSON section.
    func json() -> JSONValue {
        var obj: [String: JSONValue] = ["format": .string(Self.format)]
        let e = forms.embedding
        obj["wte"] = .object(e.maskable != nil ? ["form": .string(e.mask == nil ? "dense" : "sparse")] : ["components": .array(e.components.map { .object($0.configEntry) })])
        var ls: [String: JSONValue] = [:]
        for lin in forms.blocks.flatMap(\.linears) where !lin.isUncompressed {
            ls[lin.name] = .array(lin.components.map { .object($0.configEntry) })
        }
        obj["layers"] = .object(ls)
        if !history.isEmpty { obj["history"] = .array(history) }
        return .object(obj)
    }
}
