import Reporting
import ArgumentParser
import Foundation
import Model
import MPI

/// `squeeze init`: a randomly initialized GPT-2 directory of any shape, with the real tokenizer.
struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a randomly initialized GPT-2 model directory from a config.json (e.g. assets/configs/gpt2-xl.json).")
    @Option(help: "config.json of the model (assets/configs/ holds distilgpt2, gpt2, gpt2-medium, gpt2-large and gpt2-xl).") var config: String
    @Option(help: "Output model directory.") var out: String
    @Option(help: "Tokenizer directory with vocab.json and merges.txt, or tokenizer.json (default: the config's directory, then ../gpt2 beside it).") var tokenizer: String?
    @Option(help: "Seed of the initialization.") var seed: UInt64 = 1234
    @Option(help: "Save the weights as f32, f16 or bf16.") var dtype = "f32"
    @Option(help: "Shard the weights above this size, as save_pretrained does (e.g. 5GB, 500MB).") var maxShardSize = "5GB"

    func run() throws { try guarded {
        _ = try startMPI()
        let dt = try weightDType(dtype)
        let shard = try byteCount(maxShardSize, option: "--max-shard-size")
        let cfgURL = fileURL(config)
        let cfg = try GPT2Config(url: cfgURL)
        let tok = try tokenizerDirectory(tokenizer, configURL: cfgURL)
        guard Console.rank == 0 else { return }
        let t0 = Date()
        Console.status("initializing \(cfg.nLayer) x \(cfg.nEmbd) (\(cfg.nHead) heads, vocab \(cfg.vocabSize)) ...")
        let m = try GPT2(config: cfg, seed: seed)
        m.sourceDirectory = tok
        try m.save(to: fileURL(out), dtype: dt, tokenizerFrom: tok, maxShardBytes: shard)
        Console.print("wrote \(m.params.parameterCount) parameters (\(dt.rawValue)) and the tokenizer to \(out) in \(fmt(Date().timeIntervalSince(t0), 1)) s")
    } }
}

/// The tokenizer directory for a model made from a config file: `given`, else the config's own
/// directory, else `../gpt2` beside it (the repository's assets/configs -> assets/gpt2).
func tokenizerDirectory(_ given: String?, configURL: URL) throws -> URL {
    let dir = configURL.deletingLastPathComponent()
    let candidates = given.map { [fileURL($0)] } ?? [dir, dir.deletingLastPathComponent().appendingPathComponent("gpt2")]
    for c in candidates where GPT2Tokenizer.files(in: c).allSatisfy({ FileManager.default.fileExists(atPath: $0.path) }) {
        return c.standardizedFileURL
    }
    throw ValidationError("no vocab.json and merges.txt (or tokenizer.json) in \(candidates.map(\.path).joined(separator: " or ")); pass --tokenizer DIR")
}

/// "5GB", "500MB", "1.5GiB", "123456": bytes (decimal units as Hugging Face's max_shard_size).
func byteCount(_ text: String, option: String) throws -> Int {
    let units: [(String, Double)] = [("GIB", 1_073_741_824), ("MIB", 1_048_576), ("KIB", 1024), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3), ("B", 1)]
    let t = text.uppercased().trimmingCharacters(in: .whitespaces)
    for (u, scale) in units where t.hasSuffix(u) {
        if let v = Double(t.dropLast(u.count).trimmingCharacters(in: .whitespaces)), v > 0 { return Int(v * scale) }
    }
    if let v = Int(t), v > 0 { return v }
    throw ValidationError("\(option): expected a size such as 5GB or 500MB, got '\(text)'")
}
