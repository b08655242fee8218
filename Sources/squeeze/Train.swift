import Reporting
import ArgumentParser
import Foundation
import Model
import MPI
import Training
import Distributed

/// `squeeze train`: train a model on text (no teacher, alpha = 0), data parallel over ranks.
/// Its settings are a recipe's `distill` keys with the same defaults (`DistillSettings.keys`, the
/// one table): the common ones as flags, any of them with `--set key=value`.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a GPT-2 model on text (from a model directory or a new config), over all ranks.",
        discussion: "Settings are a recipe's distill keys, with the same defaults: "
            + DistillSettings.keys.filter { !["temperature", "alpha", "hidden", "attention", "layer_map"].contains($0.name) }
                .map { "\($0.name) (\($0.help))" }.joined(separator: "; ") + ".")
    @Option(help: "Start from this model directory.") var model: String?
    @Option(help: "Start from a new model with this config.json (random init).") var config: String?
    @Option(help: "Tokenizer directory (vocab.json and merges.txt, or tokenizer.json) for --config (default: the config's directory).") var tokenizer: String?
    @Option(help: "Training text (UTF-8 file or directory of .txt).") var data: String
    @Option(help: "Output model directory (checkpoints in OUT/checkpoint).") var out: String
    @Option(help: "Optimizer steps (default \(DistillSettings().steps)).") var steps: Int?
    @Option(help: "Global batch in sequences (default \(DistillSettings().batch)).") var batch: Int?
    @Option(help: "Sequence length (default \(DistillSettings().seq)).") var seq: Int?
    @Option(help: "Peak learning rate (default \(DistillSettings().lr)).") var lr: Float?
    @Option(help: "Warmup steps (default 5% of steps).") var warmup: Int?
    @Option(help: "AdamW's weight decay (default \(DistillSettings().weightDecay)).") var weightDecay: Float?
    @Option(help: "Sequences per forward/backward on a rank (default: the most that fit in memory).") var microBatch: Int?
    @Option(help: "Validation every N steps (default 0: at the end).") var evalEvery: Int?
    @Option(help: "Validation tokens per evaluation (default: 65,536, falling with the model size to 8,192).") var evalTokens: Int?
    @Option(help: "Checkpoint every N steps (default 0: at the end).") var checkpointEvery: Int?
    @Option(help: "Seed for init and data order (default \(DistillSettings().seed)).") var seed: UInt64?
    @Option(name: .customLong("set"), help: ArgumentHelp("Any other setting as key=value (a recipe's distill keys; repeatable).", valueName: "key=value"))
    var settings: [String] = []
    @Option(help: "Save the final model as f32, f16 or bf16.") var dtype = "f32"
    @OptionGroup var loop: LoopOptions

    /// The settings: defaults, then --set, then the flags; alpha 0 (no teacher).
    func distillSettings() throws -> DistillSettings {
        var s = DistillSettings()
        for item in settings {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else { throw ValidationError("--set takes key=value, got '\(item)'") }
            let key = String(item[..<eq]), text = String(item[item.index(after: eq)...])
            let value = (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .string(text)
            do { try s.set(key, value, context: "--set") } catch { throw ValidationError("\(error)") }
        }
        if let v = steps { s.steps = v }
        if let v = batch { s.batch = v }
        if let v = seq { s.seq = v }
        if let v = lr { s.lr = v }
        if let v = warmup { s.warmup = v }
        if let v = weightDecay { s.weightDecay = v }
        if let v = microBatch { s.microBatch = v }
        if let v = evalEvery { s.evalEvery = v }
        if let v = evalTokens { s.evalTokens = v }
        if let v = checkpointEvery { s.checkpointEvery = v }
        if let v = seed { s.seed = v }
        s.alpha = 0
        do { try s.validate(context: "train") } catch { throw ValidationError("\(error)") }
        return s
    }

    func run() throws { try guarded {
        let world = try startMPI(quiet: loop.json)
        guard (model == nil) != (config == nil) else { throw ValidationError("give exactly one of --model DIR or --config FILE") }
        let dt = try weightDType(dtype)
        let s = try distillSettings()
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
            student = try GPT2(config: GPT2Config(url: cfgURL), seed: s.seed)
            student.sourceDirectory = tokDir
        }
        let tok = try loadTokenizer(tokDir, for: student.config, comm: world, sharedFS: !loop.noSharedFs)
        let (train, valid) = try loop.datasets(data: data, tokenizer: tok, tokenizerDirectory: tokDir, comm: world)
        try verifySameInputs([("model \(model ?? config ?? cp.modelDirectory.path)", student.contentHash),
                              ("data \(data)", train.contentHash), ("validation data \(loop.valid ?? data)", valid.contentHash)], comm: world)
        Console.status("train: \(train.count) tokens, valid: \(valid.count) tokens, \(student.params.parameterCount) parameters, \(world.size) rank(s)")
        let trainer = try Trainer(student: student, teacher: nil, settings: s, train: train, valid: valid, comm: world, run: loop.runOptions)
        trainer.checkpoint = cp
        trainer.label = "train"
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
