import Reporting
import ArgumentParser
import Foundation
import Kernels
import Model
import MPI
import Training
import Distributed

/// `squeeze generate`: sample text from a model.
struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Generate text from a prompt (KV cache; --temperature 0 is greedy).")
    @Option(help: "Model directory, or a GGUF file of llama.cpp's gpt2 layout.") var model: String
    @Option(help: "Prompt text.") var prompt: String
    @Option(help: "Maximum new tokens.") var maxTokens = 50
    @Option(help: "Sampling temperature (0: greedy).") var temperature: Float = 0.8
    @Option(help: "Sample from the k most likely tokens only.") var topK: Int?
    @Option(help: "Random seed.") var seed: UInt64 = 0
    @Option(help: "Values of dense and sparse weights in the packed model: f32 (exact) or bf16 (half the bytes).") var precision: PackedPrecision = .f32
    @Option(help: "Keys and values in the KV cache: bf16 (half the bytes; attention widens them in registers) or f32.") var kvCache: KVPrecision = .bf16
    @Flag(help: "Print {\"prompt_ids\", \"output_ids\", \"text\", \"prefill_tokens_per_second\", \"decode_tokens_per_second\", \"weight_bytes\", \"kv_cache_bytes\"} as JSON.") var json = false

    func run() throws { try guarded {
        _ = try startMPI(quiet: json)
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be >= 1") }
        guard temperature >= 0 else { throw ValidationError("--temperature must be >= 0") }
        let m = try loadPacked(model, comm: .world, precision: precision).model
        let tok = try loadTokenizer(fileURL(model), for: m.config, comm: .world)!
        let ids = tok.encode(prompt)
        // Prefill: until the first new token; decode: every token after it.
        let t0 = Date()
        var first: Date?
        let out = try m.generate(prompt: ids, maxTokens: maxTokens, sampling: .init(temperature: temperature, topK: topK, seed: seed),
                                 stopID: tok.endOfTextID, kvCache: kvCache) { _ in if first == nil { first = Date() } }
        let end = Date()
        let full = try tok.decode(out)
        if json {
            struct Out: Encodable {
                let prompt_ids: [Int]; let output_ids: [Int]; let text: String
                let prefill_tokens_per_second: Double; let decode_tokens_per_second: Double?; let weight_bytes: Int; let kv_cache_bytes: Int
            }
            let prefill = (first ?? end).timeIntervalSince(t0), decode = end.timeIntervalSince(first ?? end)
            Console.print(try jsonLine(Out(prompt_ids: ids, output_ids: ids + out, text: full, prefill_tokens_per_second: Double(ids.count) / prefill,
                                           decode_tokens_per_second: out.count > 1 ? Double(out.count - 1) / decode : nil, weight_bytes: m.weightBytes,
                                           kv_cache_bytes: KVCache.bytes(config: m.config, positions: ids.count + maxTokens, precision: kvCache))))
        } else {
            Console.print(prompt + full)
        }
    } }
}
