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
        // Every size is bounded before anything is allocated from it; the weights file then has
        // the last word (`check(against:)`).
        func int(_ key: String, _ alt: String? = nil, max limit: Int, default d: Int? = nil) throws -> Int {
            if let v = obj[key] ?? alt.flatMap({ obj[$0] }), v != .null || d == nil {
                guard case let .number(x) = v, x == x.rounded(), x > 0 else { throw FileError.format(path, "'\(key)' must be a positive integer, got \(v)") }
                guard x <= Double(limit) else { throw FileError.format(path, "'\(key)' = \(v) is beyond any GPT-2 model (at most \(limit))") }
                return Int(x)
            }
            guard let d else { throw FileError.format(path, "missing required key '\(key)'") }
            return d
        }
        if case let .string(t)? = obj["model_type"], t != "gpt2" {
            throw FileError.format(path, "model_type '\(t)' is not supported (only 'gpt2')")
        }
        vocabSize = try int("vocab_size", max: Self.limits.vocabSize)
        nPositions = try int("n_positions", "n_ctx", max: Self.limits.nPositions)
        nEmbd = try int("n_embd", max: Self.limits.nEmbd)
        nLayer = try int("n_layer", max: Self.limits.nLayer)
        nHead = try int("n_head", max: Self.limits.nEmbd)
        nInner = try int("n_inner", max: Self.limits.nInner, default: 4 * nEmbd)
        switch obj["layer_norm_epsilon"] {
        case .number(let x)?:
            guard x > 0, x < 1 else { throw FileError.format(path, "'layer_norm_epsilon' must be in (0, 1), got \(x)") }
            layerNormEpsilon = Float(x)
        case nil, .null?: layerNormEpsilon = 1e-5
        case let v?: throw FileError.format(path, "'layer_norm_epsilon' must be a number, got \(v)")
        }
        switch obj["activation_function"] {
        case .string(let s)?: activation = s
        case nil, .null?: activation = "gelu_new"
        case let v?: throw FileError.format(path, "'activation_function' must be a string, got \(v)")
        }
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
