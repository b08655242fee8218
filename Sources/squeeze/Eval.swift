import Reporting
import ArgumentParser
import Foundation
import Kernels
import Model
import MPI
import Training
import Distributed

/// `squeeze eval`: perplexity of a model on a text, sliding window as in Hugging Face's guide.
struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Perplexity on a text file (sliding window; each token scored once).")
    @Option(help: "Model directory (plain or compressed), or a GGUF file of llama.cpp's gpt2 layout (F32, F16, BF16, Q8_0, Q4_0).") var model: String
    @Option(help: "UTF-8 text file, or a directory of .txt files.") var data: String
    @Option(help: "Window stride in tokens (default: the context length).") var stride: Int?
    @Option(help: "Context length in tokens (default: the model's n_positions).") var context: Int?
    @Option(help: "Windows per forward pass (default: as many as fit in a 768 MiB workspace, up to 8).") var batch: Int?
    @Option(help: "Only score the first N tokens of the text.") var maxTokens: Int?
    @Option(help: "sliding (Hugging Face's sliding window: every token scored once) or llama (llama-perplexity's: non-overlapping windows of --context, each scoring only its second half).") var scoring = "sliding"
    @Flag(help: "Print {\"perplexity\", \"nll\", \"tokens\", \"seconds\", \"tokens_per_second\"} as JSON.") var json = false
    @Flag(help: "Rank 0 reads the model and data and broadcasts them (no shared filesystem).") var noSharedFs = false
    @Flag(help: "Evaluate a model whose weights hold NaN or infinite values (refused by default).") var allowNonFinite = false
    @Flag(help: "Print the memory the evaluation needs and exit.") var dryRun = false
    @Option(help: "Values of dense and sparse weights in the packed model: f32 (exact) or bf16 (half the bytes).") var precision: PackedPrecision = .f32

    func run() throws { try guarded {
        let world = try startMPI(quiet: json)
        if let s = stride, s < 1 { throw ValidationError("--stride must be >= 1") }
        if let b = batch, b < 1 { throw ValidationError("--batch must be >= 1") }
        let rule: PerplexityScoring
        switch scoring {
        case "sliding": rule = .slidingWindow
        case "llama":
            guard stride == nil else { throw ValidationError("--scoring llama takes no --stride (llama-perplexity's windows do not overlap)") }
            rule = .secondHalf
        default: throw ValidationError("--scoring must be sliding or llama, got '\(scoring)'")
        }
        // The memory it needs, from the headers, before the weights are read.
        let forms = try GPT2.forms(model: fileURL(model))
        let ctx = min(context ?? forms.config.nPositions, forms.config.nPositions)
        let windows = MemoryEstimate.evaluationBatch(forms: forms, context: ctx, given: batch)
        let ranksPerNode = world.size > 1 ? try world.splitShared().size : 1
        let estimate = MemoryEstimate.evaluation(forms: forms, rows: windows * ctx, ranksPerNode: ranksPerNode, tokens: maxTokens ?? 0)
        if dryRun { Console.print("batch \(windows) x \(ctx) tokens\n" + estimate.describe()); return }
        guard estimate.fits else { throw CLIError("the evaluation does not fit in this node's memory:\n\(estimate.describe())\ntry --batch 1 or a shorter --context") }
        let (m, modelHash) = try loadPacked(model, comm: world, sharedFS: !noSharedFs, allowNonFinite: allowNonFinite, precision: precision)
        let tok = try loadTokenizer(fileURL(model), for: m.config, comm: world, sharedFS: !noSharedFs)
        let ds = try TokenDataset.load(fileURL(data), tokenizer: tok, tokenizerDirectory: fileURL(model), comm: world,
                                       cacheDirectory: tokenCacheDirectory(), sharedFS: !noSharedFs)
        try verifySameInputs([("model \(model)", modelHash ?? 0), ("data \(data)", ds.contentHash)], comm: world)
        var ids = ds.tokens.map { Int32($0) }
        if let n = maxTokens { ids = Array(ids.prefix(max(n, 0))) }
        let t0 = Date()
        let r = try evaluatePerplexity(model: m, tokens: ids, context: ctx, stride: stride, batch: windows, scoring: rule, comm: world) { done, total in
            Console.progress("eval windows \(done)/\(total) (rank 0)")
        }
        Console.endProgress()
        let seconds = Date().timeIntervalSince(t0)
        if json {
            // JSON has no NaN: a non-finite result (a model loaded with --allow-non-finite) is null.
            struct Out: Encodable {
                let perplexity: Double?; let nll: Double?; let tokens: Int; let seconds: Double; let tokens_per_second: Double
                let weight_bytes: Int; let flops_per_token: Double; let peak_rss_bytes: Int?
            }
            func finite(_ x: Double) -> Double? { x.isFinite ? x : nil }
            Console.print(try jsonLine(Out(perplexity: finite(r.perplexity), nll: finite(r.nll), tokens: r.tokens, seconds: seconds,
                                           tokens_per_second: Double(r.tokens) / seconds, weight_bytes: m.weightBytes, flops_per_token: m.flopsPerToken,
                                           peak_rss_bytes: MemoryEstimate.peakResidentBytes())))
            return
        }
        Console.print("perplexity \(fmt(r.perplexity, 4))  nll \(fmt(r.nll, 6))  tokens \(r.tokens)  (\(fmt(seconds, 1)) s, \(fmt(Double(r.tokens) / seconds, 0)) tokens/s)")
    } }
}
