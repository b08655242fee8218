import Model

/// Settings of one distillation (or training) run: a recipe's `distill:` block, `squeeze train`'s
/// options, a checkpoint's record. Every key, its default and its check live in one table,
/// `DistillSettings.keys`, which the recipe parser, the JSON coding and the CLI all go through.
public struct DistillSettings: Equatable, Sendable {
    /// Optimizer steps.
    public var steps: Int = 1000
    /// Global batch in sequences (split over ranks; the same whatever the rank count).
    public var batch: Int = 8
    /// Sequence length in tokens.
    public var seq: Int = 256
    /// Peak learning rate.
    public var lr: Float = 1e-4
    /// Linear warmup steps (nil: 5% of steps).
    public var warmup: Int? = nil
    /// Softmax temperature of the KD term.
    public var temperature: Float = 2
    /// Weight of the KD term; 1 − alpha weights cross-entropy. 0 trains on the data alone.
    public var alpha: Float = 0.5
    public var weightDecay: Float = 0.01
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    /// Global gradient-norm clip (0: none).
    public var gradClip: Float = 1
    /// Final learning rate as a fraction of `lr` (cosine floor).
    public var minLRRatio: Float = 0.1
    /// Validation perplexity every this many steps (0: only at the end).
    public var evalEvery: Int = 0
    /// Validation tokens scored per evaluation (nil: from the model size, see `validationTokens`).
    public var evalTokens: Int? = nil
    /// Sequences per forward/backward on one rank (nil: the most that fit, see `Trainer`).
    public var microBatch: Int? = nil
    /// Write a checkpoint every this many steps (0: only at the end).
    public var checkpointEvery: Int = 0
    /// Data sampling seed.
    public var seed: UInt64 = 1234
    /// Weight of the intermediate-layer term: per-block MSE between student and teacher block
    /// outputs (the residual stream), averaged over the mapped blocks, tokens and channels.
    public var hidden: Float = 0
    /// Weight of the attention term: KL(teacher ‖ student) between attention probabilities,
    /// averaged over the mapped blocks, heads and query tokens.
    public var attention: Float = 0
    /// Teacher block of each student block for the intermediate terms (nil: the same block when
    /// the depths agree, else evenly spread: round((l + 1) L_t / L_s) − 1).
    public var layerMap: [Int]? = nil

    public init() {}

    /// The teacher block that student block `l` of `studentLayers` learns from.
    public func teacherBlock(_ l: Int, studentLayers: Int, teacherLayers: Int) -> Int {
        if let m = layerMap { return m[l] }
        if studentLayers == teacherLayers { return l }
        return max(0, Int((Double(l + 1) * Double(teacherLayers) / Double(studentLayers)).rounded()) - 1)
    }

    /// Warmup steps in effect.
    public var warmupSteps: Int { warmup ?? max(1, steps / 20) }

    /// Validation tokens in effect: `evalTokens`, else 65,536 for models up to 20M parameters,
    /// falling in proportion to the size down to 8,192 (gpt2-medium and up), so that validating
    /// costs about the same whatever the model.
    public func validationTokens(parameters: Int) -> Int {
        evalTokens ?? min(65_536, max(8_192, Int(65_536.0 * 20e6 / Double(max(parameters, 1)))))
    }

    /// These settings with the steps (and warmup, evaluation and checkpoint intervals) scaled by
    /// `factor` (`--distill-scale`: 0.1 for a quick run).
    public func scaled(by factor: Double) -> DistillSettings {
        guard factor != 1 else { return self }
        var s = self
        s.steps = max(1, Int((Double(steps) * factor).rounded()))
        s.warmup = warmup.map { min(s.steps, Int((Double($0) * factor).rounded())) }
        if evalEvery > 0 { s.evalEvery = max(1, Int((Double(evalEvery) * factor).rounded())) }
        if checkpointEvery > 0 { s.checkpointEvery = max(1, Int((Double(checkpointEvery) * factor).rounded())) }
        return s
    }

    // MARK: - The table

    /// One setting: its name in recipes, checkpoints and `squeeze train --set`, its help, and how
    /// a value is checked and stored.
    public struct Key: @unchecked Sendable {
        public let name: String
        public let help: String
        /// What values are allowed, for messages ("an integer >= 1", "a number in (0, 1)").
        public let allowed: String
        let read: (inout DistillSettings, JSONValue) -> Bool
        let write: (DistillSettings) -> JSONValue?
    }

    static func int(_ name: String, _ kp: WritableKeyPath<DistillSettings, Int>, min lo: Int, _ help: String) -> Key {
        Key(name: name, help: help, allowed: "an integer >= \(lo)", read: { s, v in
            guard let i = v.intValue, i >= lo else { return false }
            s[keyPath: kp] = i
            return true
        }, write: { .number(Double($0[keyPath: kp])) })
    }

    static func optionalInt(_ name: String, _ kp: WritableKeyPath<DistillSettings, Int?>, min lo: Int, _ help: String) -> Key {
        Key(name: name, help: help, allowed: "an integer >= \(lo) (or null for the default)", read: { s, v in
            if v == .null { s[keyPath: kp] = nil; return true }
            guard let i = v.intValue, i >= lo else { return false }
            s[keyPath: kp] = i
            return true
        }, write: { $0[keyPath: kp].map { .number(Double($0)) } })
    }

    static func float(_ name: String, _ kp: WritableKeyPath<DistillSettings, Float>, _ allowed: String,
                      _ ok: @escaping (Double) -> Bool, _ help: String) -> Key {
        Key(name: name, help: help, allowed: allowed, read: { s, v in
            guard let x = v.numberValue, x.isFinite, ok(x) else { return false }
            s[keyPath: kp] = Float(x)
            return true
        }, write: { .number(Double($0[keyPath: kp])) })
    }

    /// Every setting, in the order recipes document them.
    public static let keys: [Key] = [
        int("steps", \.steps, min: 1, "optimizer steps"),
        int("batch", \.batch, min: 1, "global batch in sequences (split over ranks)"),
        int("seq", \.seq, min: 2, "sequence length in tokens"),
        float("lr", \.lr, "a number in (0, 1)", { $0 > 0 && $0 < 1 }, "peak learning rate"),
        optionalInt("warmup", \.warmup, min: 0, "linear warmup steps (default 5% of steps)"),
        float("temperature", \.temperature, "a number > 0", { $0 > 0 }, "softmax temperature of the KD term"),
        float("alpha", \.alpha, "a number in [0, 1]", { $0 >= 0 && $0 <= 1 }, "weight of the KD term (1 - alpha weights cross-entropy)"),
        float("weight_decay", \.weightDecay, "a number in [0, 1)", { $0 >= 0 && $0 < 1 }, "AdamW's decoupled weight decay"),
        float("beta1", \.beta1, "a number in [0, 1)", { $0 >= 0 && $0 < 1 }, "AdamW's beta1"),
        float("beta2", \.beta2, "a number in [0, 1)", { $0 >= 0 && $0 < 1 }, "AdamW's beta2"),
        float("grad_clip", \.gradClip, "a number >= 0", { $0 >= 0 }, "global gradient-norm clip (0: none)"),
        float("min_lr_ratio", \.minLRRatio, "a number in [0, 1]", { $0 >= 0 && $0 <= 1 }, "final learning rate as a fraction of lr"),
        int("eval_every", \.evalEvery, min: 0, "validation every this many steps (0: at the end)"),
        optionalInt("eval_tokens", \.evalTokens, min: 2, "validation tokens (default: 65,536 falling with model size to 8,192)"),
        optionalInt("micro_batch", \.microBatch, min: 1, "sequences per forward/backward on a rank (default: the most that fit)"),
        int("checkpoint_every", \.checkpointEvery, min: 0, "checkpoint every this many steps (0: at the end)"),
        Key(name: "seed", help: "data sampling seed", allowed: "an integer >= 0", read: { s, v in
            guard let i = v.intValue, i >= 0 else { return false }
            s.seed = UInt64(i)
            return true
        }, write: { .number(Double($0.seed)) }),
        float("hidden", \.hidden, "a number >= 0", { $0 >= 0 }, "weight of the per-block hidden-state MSE to the teacher"),
        float("attention", \.attention, "a number >= 0", { $0 >= 0 }, "weight of the attention-probability KL to the teacher"),
        Key(name: "layer_map", help: "teacher block of each student block (default: evenly spread)", allowed: "a list of block indices >= 0, one per student block",
            read: { s, v in
                if v == .null { s.layerMap = nil; return true }
                guard let a = v.arrayValue else { return false }
                let m = a.compactMap(\.intValue)
                guard m.count == a.count, m.allSatisfy({ $0 >= 0 }) else { return false }
                s.layerMap = m
                return true
            }, write: { $0.layerMap.map { .array($0.map { .number(Double($0)) }) } }),
    ]

    /// The names of every setting.
    public static var keyNames: [String] { keys.map(\.name) }

    /// Sets one setting; errors name `context.key` and what is allowed.
    public mutating func set(_ name: String, _ value: JSONValue, context: String = "distill") throws {
        guard let key = Self.keys.first(where: { $0.name == name }) else {
            throw TrainingError.config("unknown key '\(context).\(name)' (allowed: \(Self.keyNames.joined(separator: ", ")))")
        }
        guard key.read(&self, value) else { throw TrainingError.config("\(context).\(name): must be \(key.allowed), got \(value)") }
    }

    /// Settings from a JSON or YAML mapping (defaults for absent keys), checked.
    public init(values: [String: JSONValue], context: String = "distill") throws {
        self.init()
        for name in values.keys.sorted() { try set(name, values[name]!, context: context) }
        try validate(context: context)
    }

    /// The settings as a mapping (unset optional keys left out).
    public var values: [String: JSONValue] {
        var out: [String: JSONValue] = [:]
        for k in Self.keys { if let v = k.write(self) { out[k.name] = v } }
        return out
    }

    /// Checks the ranges of every value and the rules between them; errors name the key.
    public func validate(context: String = "distill") throws {
        var copy = DistillSettings()
        for k in Self.keys {
            if let v = k.write(self), !k.read(&copy, v) { throw TrainingError.config("\(context).\(k.name): must be \(k.allowed), got \(v)") }
        }
        if let w = warmup, w > steps { throw TrainingError.config("\(context).warmup: must be in [0, steps], got \(w)") }
    }
}

extension DistillSettings: Codable {
    public init(from decoder: Decoder) throws {
        let values = try [String: JSONValue](from: decoder)
        try self.init(values: values)
    }

    public func encode(to encoder: Encoder) throws { try values.encode(to: encoder) }
}
