/// How a job runs, whoever runs it (`squeeze compress`, `squeeze train`, a test): one value made by
/// the CLI and passed down whole through `CompressionJob` and `RecipeRunner` to every `Trainer`.
public struct RunOptions {
    /// Reduce gradient buckets while backward runs (off: after it, for measurements).
    public var overlapAllreduce = true
    /// Shard AdamW's moments over the ranks (ZeRO-1) when there are several.
    public var shardOptimizer = true
    /// Recompute each block's activations in backward instead of keeping them (less memory, about
    /// one more forward of compute).
    public var recompute = false
    /// JSON lines instead of progress text.
    public var jsonLines = false
    /// Print each distillation's time per phase at its end.
    public var printProfile = false
    /// Multiplies every stage's distillation steps (and warmup), e.g. 0.1 for a quick run.
    public var distillScale = 1.0
    /// Stop (checkpoint written, `TrainingError.interrupted`) after this many distillation steps in
    /// total, as an interruption would (tests, time-boxed runs).
    public var stopAfterDistillSteps: Int?
    /// Polled at every step boundary (any rank's yes stops all): true asks for a checkpoint and a
    /// clean stop. The executable connects it to SIGINT/SIGTERM; a poll that answers yes consumes
    /// the request.
    public var interruptRequested: () -> Bool = { false }

    public init() {}
}
