/// Settings of one distillation (or training) run: a recipe's `distill:` block or
/// `squeeze train`'s options.
public struct DistillSettings: Codable, Equatable, Sendable {
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
    /// Validation tokens scored per evaluation.
    public var evalTokens: Int = 65536
    /// Sequences per forward/backward on one rank (memory bound); gradients accumulate.
    public var microBatch: Int = 4
    /// Write a checkpoint every this many steps (0: only at the end).
    public var checkpointEvery: Int = 0
    /// Data sampling seed.
    public var seed: UInt64 = 1234

    public init() {}

    /// Warmup steps in effect.
    public var warmupSteps: Int { warmup ?? max(1, steps / 20) }

    /// Checks ranges; errors name the key.
    public func validate(context: String = "distill") throws {
        func fail(_ key: String, _ allowed: String, _ got: Any) throws -> Never {
            throw TrainingError.config("\(context).\(key): \(allowed), got \(got)")
        }
        if steps < 1 { try fail("steps", "must be >= 1", steps) }
        if batch < 1 { try fail("batch", "must be >= 1", batch) }
        if seq < 2 { try fail("seq", "must be >= 2", seq) }
        if !(lr > 0 && lr < 1) { try fail("lr", "must be in (0, 1)", lr) }
        if let w = warmup, w < 0 || w > steps { try fail("warmup", "must be in [0, steps]", w) }
        if !(temperature > 0) { try fail("temperature", "must be > 0", temperature) }
        if !(alpha >= 0 && alpha <= 1) { try fail("alpha", "must be in [0, 1]", alpha) }
        if !(weightDecay >= 0 && weightDecay < 1) { try fail("weight_decay", "must be in [0, 1)", weightDecay) }
        if !(beta1 >= 0 && beta1 < 1) { try fail("beta1", "must be in [0, 1)", beta1) }
        if !(beta2 >= 0 && beta2 < 1) { try fail("beta2", "must be in [0, 1)", beta2) }
        if gradClip < 0 { try fail("grad_clip", "must be >= 0", gradClip) }
        if !(minLRRatio >= 0 && minLRRatio <= 1) { try fail("min_lr_ratio", "must be in [0, 1]", minLRRatio) }
        if evalEvery < 0 { try fail("eval_every", "must be >= 0", evalEvery) }
        if evalTokens < 2 { try fail("eval_tokens", "must be >= 2", evalTokens) }
        if microBatch < 1 { try fail("micro_batch", "must be >= 1", microBatch) }
        if checkpointEvery < 0 { try fail("checkpoint_every", "must be >= 0", checkpointEvery) }
    }

    public enum CodingKeys: String, CodingKey, CaseIterable {
        case steps, batch, seq, lr, warmup, temperature, alpha
        case weightDecay = "weight_decay", beta1, beta2, gradClip = "grad_clip", minLRRatio = "min_lr_ratio"
        case evalEvery = "eval_every", evalTokens = "eval_tokens", microBatch = "micro_batch"
        case checkpointEvery = "checkpoint_every", seed
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var s = DistillSettings()
        s.steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? s.steps
        s.batch = try c.decodeIfPresent(Int.self, forKey: .batch) ?? s.batch
        s.seq = try c.decodeIfPresent(Int.self, forKey: .seq) ?? s.seq
        s.lr = try c.decodeIfPresent(Float.self, forKey: .lr) ?? s.lr
        s.warmup = try c.decodeIfPresent(Int.self, forKey: .warmup)
        s.temperature = try c.decodeIfPresent(Float.self, forKey: .temperature) ?? s.temperature
        s.alpha = try c.decodeIfPresent(Float.self, forKey: .alpha) ?? s.alpha
        s.weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? s.weightDecay
        s.beta1 = try c.decodeIfPresent(Float.self, forKey: .beta1) ?? s.beta1
        s.beta2 = try c.decodeIfPresent(Float.self, forKey: .beta2) ?? s.beta2
        s.gradClip = try c.decodeIfPresent(Float.self, forKey: .gradClip) ?? s.gradClip
        s.minLRRatio = try c.decodeIfPresent(Float.self, forKey: .minLRRatio) ?? s.minLRRatio
        s.evalEvery = try c.decodeIfPresent(Int.self, forKey: .evalEvery) ?? s.evalEvery
        s.evalTokens = try c.decodeIfPresent(Int.self, forKey: .evalTokens) ?? s.evalTokens
        s.microBatch = try c.decodeIfPresent(Int.self, forKey: .microBatch) ?? s.microBatch
        s.checkpointEvery = try c.decodeIfPresent(Int.self, forKey: .checkpointEvery) ?? s.checkpointEvery
        s.seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? s.seed
        self = s
    }
}
