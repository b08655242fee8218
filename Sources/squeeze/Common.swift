import Reporting
import ArgumentParser
import Distributed
import Foundation
import Model
import MPI
import Training
import Kernels

/// Initializes MPI, tells the console which rank prints, and sets BLAS threads per rank.
func startMPI(quiet: Bool = false) throws -> Communicator {
    let world = Communicator.world
    Console.rank = world.rank
    Console.worldSize = world.size
    Console.quiet = quiet
    let env = ProcessInfo.processInfo.environment
    try configureThreads(comm: world, requested: env["OPENBLAS_NUM_THREADS"].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil })
    return world
}

/// The token cache directory from this process's environment (`SQUEEZE_CACHE`, `XDG_CACHE_HOME`).
func tokenCacheDirectory() -> URL { TokenDataset.cacheDirectory(environment: ProcessInfo.processInfo.environment) }

/// The weight type of a `--dtype` option: f32, f16 or bf16.
func weightDType(_ text: String) throws -> SafeTensorsDType {
    guard let d = SafeTensorsDType(rawValue: text.uppercased()), [.f32, .f16, .bf16].contains(d) else {
        throw ValidationError("--dtype must be f32, f16 or bf16, got '\(text)'")
    }
    return d
}

/// Encodes a value as one line of JSON (sorted, snake_case keys: every `--json` output alike).
func jsonLine<T: Encodable>(_ value: T) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    encoder.keyEncodingStrategy = .convertToSnakeCase
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Formats a number with fixed decimals.
func fmt(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

/// A path argument as a file URL.
func fileURL(_ path: String) -> URL { URL(fileURLWithPath: (path as NSString).expandingTildeInPath).standardizedFileURL }

/// Loads a model directory on every rank (see `GPT2.load(directory:comm:sharedFS:allowNonFinite:readOnly:)`).
func loadModel(_ path: String, comm: Communicator, sharedFS: Bool = true, allowNonFinite: Bool = false, readOnly: Bool = false) throws -> GPT2 {
    try GPT2.load(directory: fileURL(path), comm: comm, sharedFS: sharedFS, allowNonFinite: allowNonFinite, readOnly: readOnly)
}

/// The model of a command that only runs it forward (eval, generate), packed in `precision`, and
/// a hash of what each rank loaded when there are several (for `verifySameInputs`). One rank
/// packs a model directory or GGUF file straight from the files (`PackedGPT2.load`: a compressed
/// or BF16 model never holds a dense F32 copy; a GGUF file's weights are read where they lie);
/// several ranks hold the trainable model once per node and each packs it.
func loadPacked(_ path: String, comm: Communicator, sharedFS: Bool = true, allowNonFinite: Bool = false,
                precision: PackedPrecision) throws -> (model: PackedGPT2, contentHash: UInt64?) {
    let url = fileURL(path)
    if comm.size == 1 {
        return (GGUFLayout.isGGUF(url) ? try PackedGPT2.load(gguf: url, precision: precision, allowNonFinite: allowNonFinite)
                                       : try PackedGPT2.load(directory: url, precision: precision, allowNonFinite: allowNonFinite), nil)
    }
    let trainable = try loadModel(path, comm: comm, sharedFS: sharedFS, allowNonFinite: allowNonFinite, readOnly: true)
    return (try PackedGPT2(trainable, precision: precision), comm.size > 1 ? trainable.contentHash : nil)
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

extension PackedPrecision: ExpressibleByArgument {}
extension KVPrecision: ExpressibleByArgument {}
