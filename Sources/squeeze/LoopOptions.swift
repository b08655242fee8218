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

    /// The run options these flags (and the process's signals) ask for.
    var runOptions: RunOptions {
        var r = RunOptions()
        r.overlapAllreduce = !noOverlap
        r.shardOptimizer = !noShardOptimizer
        r.recompute = recompute
        r.jsonLines = json
        r.printProfile = profile
        r.interruptRequested = SignalFlag.consume
        return r
    }

    /// Train and validation token streams.
    func datasets(data: String, tokenizer: GPT2Tokenizer?, tokenizerDirectory: URL, comm: Communicator) throws -> (TokenDataset, TokenDataset) {
        guard validFraction > 0 && validFraction < 0.5 else { throw ValidationError("--valid-fraction must be in (0, 0.5)") }
        return try TokenDataset.trainAndValidation(data: fileURL(data), valid: valid.map(fileURL), validFraction: validFraction, tokenizer: tokenizer,
                                                   tokenizerDirectory: tokenizerDirectory, comm: comm, cacheDirectory: tokenCacheDirectory(),
                                                   sharedFS: !noSharedFs)
    }
}
