import Reporting
import ArgumentParser
import Foundation
import Model
import MPI
import Training
import Distributed

/// Options shared by `train` and `compress` for the distillation loop.
struct LoopOptions: ParsableArguments {
    @Option(help: "Held-out text for validation perplexity (default: the last --valid-fraction of --data).") var valid: String?
    @Option(help: "Fraction of --data held out for validation when --valid is not given.") var validFraction = 0.02
    @Flag(help: "Continue from OUT/checkpoint.") var resume = false
    @Flag(help: "JSON lines instead of progress text.") var json = false
    @Flag(help: "Reduce gradients after backward instead of overlapping (for measurements).") var noOverlap = false
    @Flag(help: "Recompute each block's activations in backward instead of keeping them (less memory, about a third more compute).") var recompute = false
    @Flag(help: "Keep the whole optimizer state on every rank (all-reduce) instead of sharding it (ZeRO-1, the default with several ranks).") var noShardOptimizer = false
    @Flag(help: "Rank 0 reads the data and broadcasts it (no shared filesystem).") var noSharedFs = false
    /// SQUEEZE_PROFILE=1 prints the time per phase of the distillation step at the end.
    var profile: Bool { ProcessInfo.processInfo.environment["SQUEEZE_PROFILE"] != nil }

    /// Train and validation token streams.
    func datasets(data: String, tokenizer: GPT2Tokenizer?, tokenizerDirectory: URL, comm: Communicator) throws -> (TokenDataset, TokenDataset) {
        guard validFraction > 0 && validFraction < 0.5 else { throw ValidationError("--valid-fraction must be in (0, 0.5)") }
        return try TokenDataset.trainAndValidation(data: fileURL(data), valid: valid.map(fileURL), validFraction: validFraction, tokenizer: tokenizer,
                                                   tokenizerDirectory: tokenizerDirectory, comm: comm, cacheDirectory: tokenCacheDirectory(),
                                                   sharedFS: !noSharedFs)
    }
}

/// `squeeze train`: train a model on text (no teacher, alpha = 0), data parallel over ranks.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a GPT-2 model on text (from a model directory or a new config), over all ranks.")
    @Option(help: "Start from this model directory.") var model: String?
    @Option(help: "Start from a new model with this config.json (random init).") var config: String?
    @Option(help: "Tokenizer directory (vocab.json and merges.txt, or tokenizer.json) for --config (default: the config's directory).") var tokenizer: String?
    @Option(help: "Training text (UTF-8 file or directory of .txt).") var data: String
    @Option(help: "Output model directory (checkpoints in OUT/checkpoint).") var out: String
    @Option(help: "Optimizer steps.") var steps = 1000
    @Option(help: "Global batch (sequences per step).") var batch = 16
    @Option(help: "Sequence length.") var seq = 256
    @Option(help: "Peak learning rate.") var lr: Float = 6e-4
    @Option(help: "Warmup steps (default 5% of steps).") var warmup: Int?
    @Option(help: "Weight decay.") var weightDecay: Float = 0.1
    @Option(help: "Sequences per forward/backward on a rank (default: the most that fit in memory).") var microBatch: Int?
    @Option(help: "Validation every N steps (0: at the end).") var evalEvery = 0
    @Option(help: "Validation tokens per evaluation (default: 65,536, falling with the model size to 8,192).") var evalTokens: Int?
    @Option(help: "Checkpoint every N steps (0: at the end).") var checkpointEvery = 100
    @Option(help: "Seed for init and data order.") var seed: UInt64 = 1234
    @Option(help: "Save the final model as f32, f16 or bf16.") var dtype = "f32"
    @OptionGroup var loop: LoopOptions

    func run() throws { try guarded {
        let world = try startMPI(quiet: loop.json)
        guard (model == nil) != (config == nil) else { throw ValidationError("give exactly one of --model DIR or --config FILE") }
        let dt = try weightDType(dtype)
        let outDir = fileURL(out)
        let cp = Checkpoint(directory: outDir.appendingPathComponent("checkpoint"))
        let tokDir: URL
        let student: GPT2
        if loop.resume {
            guard cp.exists else { throw ValidationError("--resume: no checkpoint in \(cp.directory.path)") }
            student = try GPT2.load(directory: cp.modelDirectory)
            tokDir = cp.modelDirectory
        } else if let m = model {
            tokDir = fileURL(m)
            student = try loadModel(m, comm: world, sharedFS: !loop.noSharedFs)
        } else {
            let cfgURL = fileURL(config!)
            tokDir = try tokenizerDirectory(tokenizer, configURL: cfgURL)
            student = try GPT2(config: GPT2Config(url: cfgURL), seed: seed)
            student.sourceDirectory = tokDir
        }
        student.recompute = loop.recompute
        let tok = try loadTokenizer(tokDir, for: student, comm: world, sharedFS: !loop.noSharedFs)
        var s = DistillSettings()
        s.steps = steps; s.batch = batch; s.seq = seq; s.lr = lr; s.warmup = warmup; s.alpha = 0
        s.weightDecay = weightDecay; s.microBatch = microBatch; s.evalEvery = evalEvery; s.evalTokens = evalTokens
        s.checkpointEvery = checkpointEvery; s.seed = seed
        let (train, valid) = try loop.datasets(data: data, tokenizer: tok, tokenizerDirectory: tokDir, comm: world)
        try verifySameInputs([("model \(model ?? config ?? cp.modelDirectory.path)", student.contentHash),
                              ("data \(data)", train.contentHash), ("validation data \(loop.valid ?? data)", valid.contentHash)], comm: world)
        Console.status("train: \(train.count) tokens, valid: \(valid.count) tokens, \(student.params.parameterCount) parameters, \(world.size) rank(s)")
        let trainer = try Trainer(student: student, teacher: nil, settings: s, train: train, valid: valid, comm: world,
                                  overlap: !loop.noOverlap, shardOptimizer: !loop.noShardOptimizer)
        trainer.checkpoint = cp
        trainer.jsonLines = loop.json
        trainer.label = "train"
        trainer.interruptRequested = SignalFlag.consume
        trainer.printProfile = loop.profile
        SignalFlag.install()
        let start = loop.resume ? try trainer.resume(from: cp) : 0
        if start > 0 { Console.status("resuming at step \(start)") }
        let t0 = Date()
        let history = try trainer.run(from: start)
        if world.rank == 0 {
            try student.save(to: outDir, dtype: dt, tokenizerFrom: tokDir)
            try writeLossCurve(history, to: outDir.appendingPathComponent("loss.svg"), title: "squeeze train")
        }
        try world.barrier()
        let last = history.last
        Console.status("done in \(formatDuration(Date().timeIntervalSince(t0))); final loss \(last.map { fmt($0.loss, 4) } ?? "-"), valid perplexity \(last?.validPerplexity.map { fmt($0, 3) } ?? "-"); model in \(outDir.path)")
    } }
}
