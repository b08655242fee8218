import Foundation

/// GPT-2 hyper-parameters from a Hugging Face `config.json`. Unknown keys are kept so that
/// saving writes them back; unsupported settings are refused with a message naming the key.
public struct GPT2Config: Equatable, Sendable {
    public var vocabSize: Int
    public var nPositions: Int
    public var nEmbd: Int
    public var nLayer: Int
    public var nHead: Int
    public var nInner: Int
    public var layerNormEpsilon: Float
    public var activation: String
    /// Every key of the original file (JSON-encoded values), so unknown settings survive a save.
    public var extra: [String: JSONValue]

    public var headSize: Int { nEmbd / nHead }

    /// A config with the given sizes (other settings GPT-2's defaults).
    public init(vocabSize: Int = 50257, nPositions: Int = 1024, nEmbd: Int = 768, nLayer: Int = 12, nHead: Int = 12,
                nInner: Int? = nil, layerNormEpsilon: Float = 1e-5, activation: String = "gelu_new") {
        self.vocabSize = vocabSize
        self.nPositions = nPositions
        self.nEmbd = nEmbd
        self.nLayer = nLayer
        self.nHead = nHead
        self.nInner = nInner ?? 4 * nEmbd
        self.layerNormEpsilon = layerNormEpsilon
        self.activation = activation
        self.extra = [:]
    }

    /// Activations computed as GPT-2's tanh-approximated GELU.
    public static let supportedActivations = ["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]

    /// Parses and validates `config.json` at `url`.
    public init(url: URL) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw FileError.io(url.path, "cannot read config.json") }
        try self.init(data: data, url: url)
    }

    /// Parses config.json bytes (`url` names the file in messages).
    public init(data: Data, url: URL) throws {
        let path = url.path
        guard let obj = try? JSONDecoder().decode([String: JSONValue].self, from: data) else {
            throw FileError.format(path, "not a JSON object")
        }
        func int(_ key: String, _ alt: String? = nil, default d: Int? = nil) throws -> Int {
            if let v = obj[key] ?? alt.flatMap({ obj[$0] }) {
                // Int(exactly:): 1e19 or 1.5 must be an error, not a trap or a silent truncation.
                guard case let .number(x) = v, let i = Int(exactly: x), i > 0 else { throw FileError.format(path, "'\(key)' must be a positive integer") }
                return i
            }
            guard let d else { throw FileError.format(path, "missing required key '\(key)'") }
            return d
        }
        if case let .string(t)? = obj["model_type"], t != "gpt2" {
            throw FileError.format(path, "model_type '\(t)' is not supported (only 'gpt2')")
        }
        vocabSize = try int("vocab_size")
        nPositions = try int("n_positions", "n_ctx")
        nEmbd = try int("n_embd")
        nLayer = try int("n_layer")
        nHead = try int("n_head")
        // n_inner defaults to 4 n_embd and the layers use 3 n_embd: both must be representable.
        guard nEmbd <= Int.max / 4 else { throw FileError.format(path, "'n_embd' \(nEmbd) is too large") }
        if case .number(let x)? = obj["n_inner"] {
            guard let i = Int(exactly: x), i > 0 else { throw FileError.format(path, "'n_inner' must be a positive integer or null") }
            nInner = i
        } else {
            nInner = 4 * nEmbd
        }
        if case .number(let x)? = obj["layer_norm_epsilon"] { layerNormEpsilon = Float(x) } else { layerNormEpsilon = 1e-5 }
        if case .string(let s)? = obj["activation_function"] { activation = s } else { activation = "gelu_new" }
        extra = obj
        guard nEmbd % nHead == 0 else { throw FileError.format(path, "n_embd \(nEmbd) is not divisible by n_head \(nHead)") }
        guard Self.supportedActivations.contains(activation) else {
            throw FileError.format(path, "activation_function '\(activation)' is not supported (supported: \(Self.supportedActivations.joined(separator: ", ")))")
        }
        if case .bool(false)? = obj["tie_word_embeddings"] {
            throw FileError.format(path, "tie_word_embeddings = false is not supported: GPT-2's lm_head must be tied to wte")
        }
        for key in ["add_cross_attention", "scale_attn_by_inverse_layer_idx"] {
            if case .bool(true)? = obj[key] { throw FileError.format(path, "'\(key)': true is not supported") }
        }
        if case .bool(false)? = obj["scale_attn_weights"] {
            throw FileError.format(path, "'scale_attn_weights': false is not supported")
        }
    }

    /// The JSON dictionary to save: the original keys with our values written over them.
    public func jsonObject() -> [String: JSONValue] {
        var o = extra
        o["model_type"] = .string("gpt2")
        o["vocab_size"] = .number(Double(vocabSize))
        o["n_positions"] = .number(Double(nPositions))
        o["n_embd"] = .number(Double(nEmbd))
        o["n_layer"] = .number(Double(nLayer))
        o["n_head"] = .number(Double(nHead))
        if nInner != 4 * nEmbd { o["n_inner"] = .number(Double(nInner)) }
        if o["n_ctx"] != nil { o["n_ctx"] = .number(Double(nPositions)) }
        if o["layer_norm_epsilon"]?.numberValue.map(Float.init) != layerNormEpsilon {
            o["layer_norm_epsilon"] = .number(Double("\(layerNormEpsilon)") ?? Double(layerNormEpsilon))
        }
        o["activation_function"] = .string(activation)
        o["tie_word_embeddings"] = .bool(true)
        if o["architectures"] == nil { o["architectures"] = .array([.string("GPT2LMHeadModel")]) }
        return o
    }
}

/// A JSON value that keeps numbers, strings, arrays and objects exactly (for config.json).
public enum JSONValue: Codable, Equatable, Sendable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let d = try? c.decode(Double.self) { self = .number(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .number(let d):
            if d == d.rounded() && abs(d) < 1e15 { try c.encode(Int(d)) } else { try c.encode(d) }
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var numberValue: Double? { if case .number(let d) = self { return d }; return nil }
    /// The number when it is exactly an Int (nil for 1.5 or 1e300, which `Int(_:)` would truncate or trap on).
    public var intValue: Int? { numberValue.flatMap { Int(exactly: $0) } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
}

/// Encodes a JSON object the way Hugging Face writes config.json (Python's
/// `json.dumps(obj, indent=2, sort_keys=True)` plus a newline), so untouched keys read the same.
public func encodeConfigJSON(_ object: [String: JSONValue]) throws -> Data {
    var out = ""
    writeJSON(.object(object), indent: 0, into: &out)
    out += "\n"
    return Data(out.utf8)
}

private func writeJSON(_ v: JSONValue, indent: Int, into out: inout String) {
    let pad = String(repeating: " ", count: indent + 2), end = String(repeating: " ", count: indent)
    switch v {
    case .null: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .number(let d):
        if d == d.rounded() && abs(d) < 1e15 { out += String(Int(d)) } else { out += "\(d)" }
    case .string(let s): out += pythonQuoted(s)
    case .array(let a):
        if a.isEmpty { out += "[]"; return }
        out += "[\n"
        for (i, x) in a.enumerated() {
            out += pad
            writeJSON(x, indent: indent + 2, into: &out)
            out += i + 1 < a.count ? ",\n" : "\n"
        }
        out += end + "]"
    case .object(let o):
        if o.isEmpty { out += "{}"; return }
        out += "{\n"
        let keys = o.keys.sorted()
        for (i, k) in keys.enumerated() {
            out += pad + pythonQuoted(k) + ": "
            writeJSON(o[k]!, indent: indent + 2, into: &out)
            out += i + 1 < keys.count ? ",\n" : "\n"
        }
        out += end + "}"
    }
}

/// A JSON string literal with Python's `ensure_ascii` escaping.
private func pythonQuoted(_ s: String) -> String {
    var r = "\""
    for u in s.utf16 {
        switch u {
        case 0x22: r += "\\\""
        case 0x5C: r += "\\\\"
        case 0x0A: r += "\\n"
        case 0x0D: r += "\\r"
        case 0x09: r += "\\t"
        case 0x08: r += "\\b"
        case 0x0C: r += "\\f"
        case 0x20..<0x7F: r += String(UnicodeScalar(UInt8(u)))
        default: r += String(format: "\\u%04x", u)
        }
    }
    return r + "\""
}
