import Foundation
import Model
import MPI

extension GPT2 {
    /// Loads a model directory, or a GGUF file (`GGUFLayout.isGGUF`), on every rank of `comm`:
    /// each rank reads it (shared filesystem), or with `sharedFS: false` rank 0 reads the files and
    /// broadcasts their bytes. A `readOnly` model (a teacher, a model being evaluated) is held once
    /// per node in shared memory when the files are on a shared filesystem. Collective; a rank
    /// that fails makes all fail.
    public static func load(directory dir: URL, comm: Communicator, sharedFS: Bool = true, allowNonFinite: Bool = false,
                            readOnly: Bool = false) throws -> GPT2 {
        if readOnly && sharedFS && comm.size > 1 { return try loadNodeShared(directory: dir, comm: comm, allowNonFinite: allowNonFinite) }
        if GGUFLayout.isGGUF(dir) { return try loadGGUF(dir, comm: comm, sharedFS: sharedFS, allowNonFinite: allowNonFinite) }
        if sharedFS || comm.size == 1 { return try load(directory: dir, allowNonFinite: allowNonFinite) }
        var failure = ""
        var config: [UInt8] = [], weights: [UInt8] = []
        if comm.rank == 0 {
            do {
                let f = try readFiles(directory: dir)
                config = [UInt8](f.config)
                weights = [UInt8](f.weights)
            } catch { failure = "\(error)" }
        }
        if let f = try comm.firstFailure(failure.isEmpty ? nil : failure) { throw DistributedError.inputs(f.message(on: comm.rank, doing: "read the model")) }
        try comm.broadcast(&config, root: 0)
        try comm.broadcast(&weights, root: 0)
        return try load(directory: dir, config: Data(config), weights: Data(weights), allowNonFinite: allowNonFinite)
    }

    /// A GGUF file on every rank: read by each (shared filesystem), or read by rank 0 and its
    /// bytes broadcast.
    static func loadGGUF(_ url: URL, comm: Communicator, sharedFS: Bool, allowNonFinite: Bool) throws -> GPT2 {
        if sharedFS || comm.size == 1 { return try load(gguf: url, allowNonFinite: allowNonFinite) }
        var failure = ""
        var bytes: [UInt8] = []
        if comm.rank == 0 {
            do { bytes = [UInt8](try Data(contentsOf: url)) } catch { failure = "\(url.path): cannot read: \(error.localizedDescription)" }
        }
        if let f = try comm.firstFailure(failure.isEmpty ? nil : failure) { throw DistributedError.inputs(f.message(on: comm.rank, doing: "read the model")) }
        try comm.broadcast(&bytes, root: 0)
        return try load(gguf: url, data: Data(bytes), allowNonFinite: allowNonFinite)
    }
}

/// The tokenizer of a model directory or GGUF file on the ranks that read files (all with a
/// shared filesystem, rank 0 otherwise), checked against the model's vocabulary.
public func loadTokenizer(_ dir: URL, for config: GPT2Config, comm: Communicator, sharedFS: Bool = true) throws -> GPT2Tokenizer? {
    guard sharedFS || comm.rank == 0 else { return nil }
    let tokenizer = GGUFLayout.isGGUF(dir) ? try GPT2Tokenizer(gguf: try GGUFFile(url: dir)) : try GPT2Tokenizer(directory: dir)
    guard tokenizer.vocabSize <= config.vocabSize else {
        throw DistributedError.inputs("\(dir.path): tokenizer has \(tokenizer.vocabSize) tokens, the model's vocab_size is \(config.vocabSize)")
    }
    return tokenizer
}
