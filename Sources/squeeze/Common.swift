import ArgumentParser
import Distributed
import Foundation
import Model
import MPI

/// Initialises MPI, tells the console which rank prints, and sets BLAS threads per rank.
func startMPI(quiet: Bool = false) throws -> Communicator {
    let world = Communicator.world
    Console.rank = world.rank
    Console.worldSize = world.size
    Console.quiet = quiet
    try configureThreads(comm: world)
    return world
}

/// The weight type of a `--dtype` option: f32, f16 or bf16.
func weightDType(_ text: String) throws -> SafeTensorsDType {
    guard let d = SafeTensorsDType(rawValue: text.uppercased()), [.f32, .f16, .bf16].contains(d) else {
        throw ValidationError("--dtype must be f32, f16 or bf16, got '\(text)'")
    }
    return d
}

/// Encodes a value as one line of JSON (sorted keys).
func jsonLine<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Formats a number with fixed decimals.
func fmt(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

/// A path argument as a file URL.
func fileURL(_ path: String) -> URL { URL(fileURLWithPath: (path as NSString).expandingTildeInPath).standardizedFileURL }

/// Loads a model directory on every rank: each rank reads it (shared filesystem, memory-mapped),
/// or with `sharedFS: false` rank 0 reads the files and broadcasts their bytes.
func loadModel(_ path: String, comm: Communicator, sharedFS: Bool = true, allowNonFinite: Bool = false) throws -> GPT2 {
    let dir = fileURL(path)
    if sharedFS || comm.size == 1 { return try GPT2.load(directory: dir, allowNonFinite: allowNonFinite) }
    var failure = ""
    var config: [UInt8] = [], weights: [UInt8] = []
    if comm.rank == 0 {
        do {
            let f = try GPT2.readFiles(directory: dir)
            config = [UInt8](f.config)
            weights = [UInt8](f.weights)
        } catch { failure = "\(error)" }
    }
    try comm.broadcast(&failure, root: 0)
    if !failure.isEmpty { throw CLIError(comm.rank == 0 ? failure : "rank 0 could not read the model: \(failure)") }
    try comm.broadcast(&config, root: 0)
    try comm.broadcast(&weights, root: 0)
    return try GPT2.load(directory: dir, config: Data(config), weights: Data(weights), allowNonFinite: allowNonFinite)
}

/// The tokenizer of a model directory, on the ranks that read files (all with a shared
/// filesystem, rank 0 otherwise); checked against the model's vocabulary.
func loadTokenizer(_ dir: URL, for model: GPT2, comm: Communicator, sharedFS: Bool = true) throws -> GPT2Tokenizer? {
    guard sharedFS || comm.rank == 0 else { return nil }
    let tokenizer = try GPT2Tokenizer(directory: dir)
    guard tokenizer.vocabSize <= model.config.vocabSize else {
        throw CLIError("\(dir.path): tokenizer has \(tokenizer.vocabSize) tokens, the model's vocab_size is \(model.config.vocabSize)")
    }
    return tokenizer
}

/// A right-aligned text table.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { c in all.map { $0[c].count }.max() ?? 0 }
    func line(_ r: [String]) -> String {
        r.enumerated().map { c, s in c == 0 ? s.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                                            : String(repeating: " ", count: widths[c] - s.count) + s }.joined(separator: "  ")
    }
    return ([line(header), String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1))] + rows.map(line)).joined(separator: "\n")
}

/// A failure found by the CLI itself (not an argument error): printed as `squeeze: error: ...`.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
