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

/// Loads a model directory and its tokenizer.
func loadModel(_ path: String) throws -> (GPT2, GPT2Tokenizer) {
    let dir = fileURL(path)
    let model = try GPT2.load(directory: dir)
    let tokenizer = try GPT2Tokenizer(directory: dir)
    guard tokenizer.vocabSize <= model.config.vocabSize else {
        throw ValidationError("\(dir.path): tokenizer has \(tokenizer.vocabSize) tokens, the model's vocab_size is \(model.config.vocabSize)")
    }
    return (model, tokenizer)
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
