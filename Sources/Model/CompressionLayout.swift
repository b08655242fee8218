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
            switch wte["form"]?.stringValue {
            case "lowrank":
                let maxRank = min(config.vocabSize, config.nEmbd)
                guard let r = wte["rank"]?.intValue, r > 0, r <= maxRank else {
                    throw FileError.format(path, "compression.wte: lowrank needs an integer 'rank' in 1...\(maxRank)")
                }
                embedding.rank = r
            case "sparse", "dense": break  // the mask comes from the bitmask in model.safetensors
            default: throw FileError.format(path, "compression.wte.form must be dense, sparse or lowrank")
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
                guard let c = item.objectValue, let kind = c["kind"]?.stringValue else { throw FileError.format(path, "\(where_): each component needs a 'kind'") }
                switch kind {
                case "dense":
                    let sub = c["name"]?.stringValue ?? "weight"
                    guard sub == "weight" || sub == "sparse" else { throw FileError.format(path, "\(where_): dense name must be 'weight' or 'sparse'") }
                    comps.append(DenseComponent(weightName: "\(name).\(sub)", inFeatures: i, outFeatures: o))
                case "lowrank":
                    guard let r = c["rank"]?.intValue, r > 0, r <= min(i, o) else { throw FileError.format(path, "\(where_): lowrank needs 1 <= rank <= \(min(i, o))") }
                    comps.append(LowRankComponent(prefix: "\(name).lowrank", inFeatures: i, outFeatures: o, rank: r))
                case "kronecker":
                    // Divisibility rather than m1 * m2 == i: the product of two file values can overflow.
                    guard let m1 = c["m1"]?.intValue, let n1 = c["n1"]?.intValue, let m2 = c["m2"]?.intValue, let n2 = c["n2"]?.intValue,
                          m1 > 0, n1 > 0, m2 > 0, n2 > 0, i % m1 == 0, i / m1 == m2, o % n1 == 0, o / n1 == n2 else {
                        throw FileError.format(path, "\(where_): kronecker needs positive integers m1*m2 = \(i) and n1*n2 = \(o)")
                    }
                    // At most rank R(W) = min(m1 n1, m2 n2) terms, as NearestKronecker.factorize allows
                    // (products saturate: m1 n1 <= i o can overflow for absurd n_embd/n_inner).
                    func product(_ a: Int, _ b: Int) -> Int { let (p, overflow) = a.multipliedReportingOverflow(by: b); return overflow ? .max : p }
                    let maxTerms = min(product(m1, n1), product(m2, n2))
                    let terms = c["terms"] == nil ? 1 : c["terms"]?.intValue
                    guard let terms, terms >= 1, terms <= maxTerms else {
                        throw FileError.format(path, "\(where_): kronecker 'terms' must be an integer in 1...\(maxTerms)")
                    }
                    func factorRank(_ key: String, _ rows: Int, _ cols: Int) throws -> Int? {
                        guard let v = c[key] else { return nil }
                        guard let r = v.intValue, r >= 1, r <= min(rows, cols) else {
                            throw FileError.format(path, "\(where_): kronecker '\(key)' must be an integer in 1...\(min(rows, cols))")
                        }
                        return r
                    }
                    comps.append(KroneckerComponent(prefix: name, shape: KroneckerShape(m1: m1, n1: n1, m2: m2, n2: n2), terms: terms,
                                                    factorRankA: try factorRank("factor_rank_a", m1, n1),
                                                    factorRankB: try factorRank("factor_rank_b", m2, n2)))
                default:
                    throw FileError.format(path, "\(where_): unknown component kind '\(kind)' (dense, lowrank, kronecker)")
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
        var wte: [String: JSONValue] = ["form": .string(embedding.form)]
        if let r = embedding.rank { wte["rank"] = .number(Double(r)) }
        obj["wte"] = .object(wte)
        var ls: [String: JSONValue] = [:]
        for (name, comps) in layers {
            if comps.count == 1, let d = comps[0] as? DenseComponent, d.mask == nil { continue }
            ls[name] = .array(comps.map { c -> JSONValue in
                switch c {
                case let d as DenseComponent:
                    var o: [String: JSONValue] = ["kind": .string("dense"), "sparse": .bool(d.mask != nil)]
                    if d.weightName.hasSuffix(".sparse") { o["name"] = .string("sparse") }
                    return .object(o)
                case let l as LowRankComponent:
                    return .object(["kind": .string("lowrank"), "rank": .number(Double(l.rank))])
                case let k as KroneckerComponent:
                    var o: [String: JSONValue] = ["kind": .string("kronecker"), "m1": .number(Double(k.shape.m1)), "n1": .number(Double(k.shape.n1)),
                                                  "m2": .number(Double(k.shape.m2)), "n2": .number(Double(k.shape.n2)), "terms": .number(Double(k.terms))]
                    if let r = k.factorRankA { o["factor_rank_a"] = .number(Double(r)) }
                    if let r = k.factorRankB { o["factor_rank_b"] = .number(Double(r)) }
                    return .object(o)
                default: return .null
                }
            })
        }
        obj["layers"] = .object(ls)
        if !history.isEmpty { obj["history"] = .array(history) }
        return .object(obj)
    }
}
