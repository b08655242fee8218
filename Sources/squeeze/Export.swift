import Reporting
import ArgumentParser
import Compression
import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// `squeeze export`: a plain GPT-2 directory that transformers loads (`--format hf`, also spelt
/// `--dense`), or a GGUF file in llama.cpp's gpt2 layout (`--format gguf --type ...`).
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a model as a plain Hugging Face GPT-2 directory (--format hf) or a GGUF file for llama.cpp (--format gguf).")
    @Option(help: "Model directory (plain or compressed); for --format gguf also a GGUF file.") var model: String
    @Option(help: "Output directory (hf) or .gguf file (gguf).") var out: String
    @Option(help: "hf (a plain GPT-2 directory with dense weights; the default) or gguf (llama.cpp's gpt2 layout).") var format = "hf"
    @Flag(help: "The hf export (every layer materialized as a dense matrix); kept for compatibility.") var dense = false
    @Option(help: "hf: f32, f16 or bf16 (default: as the input).") var dtype: String?
    @Option(help: "gguf: f32, f16, q8_0 or q4_0 (token_embd and the block matrices; norms, biases and position_embd stay F32).") var type: String?

    func run() throws { try guarded {
        _ = try startMPI()
        switch format.lowercased() {
        case "hf":
            guard type == nil else { throw ValidationError("--type is for --format gguf; the hf export takes --dtype") }
            try exportHF()
        case "gguf":
            guard !dense else { throw ValidationError("--dense is the hf export; --format gguf writes a GGUF file") }
            guard dtype == nil else { throw ValidationError("--dtype is for --format hf; the gguf export takes --type") }
            let names = GGUFExportType.allCases.map(\.rawValue).joined(separator: ", ")
            guard let given = type else { throw ValidationError("--format gguf needs --type (\(names))") }
            guard let t = GGUFExportType(rawValue: given.lowercased()) else { throw ValidationError("--type must be one of \(names), got '\(given)'") }
            try exportGGUF(t)
        default:
            throw ValidationError("--format must be hf or gguf, got '\(format)'")
        }
    } }

    func exportHF() throws {
        guard !GGUFLayout.isGGUF(fileURL(model)) else { throw ValidationError("--format hf needs a model directory, not a GGUF file") }
        let m = try GPT2.load(directory: fileURL(model))
        let d = try m.densified()
        let dt = try dtype.map(weightDType) ?? m.storageDType
        if Console.rank == 0 { try d.save(to: fileURL(out), dtype: dt, tokenizerFrom: fileURL(model)) }
        Console.print("wrote a dense GPT-2 directory to \(out)")
    }

    func exportGGUF(_ type: GGUFExportType) throws {
        let src = fileURL(model)
        let gguf = GGUFLayout.isGGUF(src)
        let m = gguf ? try GPT2.load(gguf: src) : try GPT2.load(directory: src)
        let tok = gguf ? try GPT2Tokenizer(gguf: try GGUFFile(url: src)) : try GPT2Tokenizer(directory: src)
        guard Console.rank == 0 else { return }
        let name = gguf ? src.deletingPathExtension().lastPathComponent : src.lastPathComponent
        let r = try m.exportGGUF(to: fileURL(out), type: type, tokenizer: tok, name: name)
        let size = (try? FileManager.default.attributesOfItem(atPath: fileURL(out).path)[.size] as? Int) ?? 0
        Console.print("wrote \(out): GGUF, llama.cpp's gpt2 layout, type \(type.rawValue), \(r.tensors.count) tensors, \(size) bytes")
        let unchanged = r.names(.unchanged), quantized = r.names(.quantized)
        if let f = type.quantFormat {
            Console.print("  \(unchanged.count) weight(s) written unchanged from Squeeze's own \(f.name) blocks"
                          + (unchanged.isEmpty ? "" : ": " + unchanged.joined(separator: ", ")))
            Console.print("  \(quantized.count) weight(s) densified and quantized to \(f.name) by ggml's reference rule")
        }
        for t in r.tensors where t.source == .fallbackF16 {
            Console.print("  \(t.name) \(t.shape) is F16: its rows of \(t.shape.last!) are not a multiple of 32 (as llama.cpp falls back)")
        }
    }
}
