import Reporting
import ArgumentParser
import Foundation
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
    @Flag(help: "Print {\"prompt_ids\", \"output_ids\", \"text\"} as JSON.") var json = false

    func run() throws { try guarded {
        _ = try startMPI(quiet: json)
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be >= 1") }
        guard temperature >= 0 else { throw ValidationError("--temperature must be >= 0") }
        let m = try loadModel(model, comm: .world)
        let tok = try loadTokenizer(fileURL(model), for: m, comm: .world)!
        let ids = tok.encode(prompt)
        let out = try m.generate(prompt: ids, maxTokens: maxTokens, sampling: .init(temperature: temperature, topK: topK, seed: seed),
                                 stopID: tok.endOfTextID)
        let full = try tok.decode(out)
        if json {
            struct Out: Encodable { let prompt_ids: [Int]; let output_ids: [Int]; let text: String }
            Console.print(try jsonLine(Out(prompt_ids: ids, output_ids: ids + out, text: full)))
        } else {
            Console.print(prompt + full)
        }
    } }
}
