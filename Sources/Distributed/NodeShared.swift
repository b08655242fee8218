import Foundation
import Model
import MPI

/// Read-only data held once per node: the ranks of a node map one MPI-3 shared window that the
/// node's first rank fills (see `NodeSharedBuffer`).
extension GPT2 {
    /// Loads a model whose weights never change (a teacher) into node-shared memory: the node's
    /// first rank reads the files into the window, the other ranks of the node read only the
    /// headers and map it. Collective over `comm`; every rank throws if the node's reader failed.
    public static func loadNodeShared(directory: URL, comm: Communicator, allowNonFinite: Bool = false) throws -> GPT2 {
        let gguf = GGUFLayout.isGGUF(directory)
        guard comm.size > 1 else {
            return gguf ? try load(gguf: directory, allowNonFinite: allowNonFinite) : try load(directory: directory, allowNonFinite: allowNonFinite)
        }
        let node = try comm.splitShared()
        var model: GPT2?
        var failure = ""
        // Headers first, agreed on by the node, so no rank enters the window's allocation alone
        // (a GGUF file is mapped and parsed whole: its header is where its tensors are described).
        var headers: (Data, WeightFiles)?
        var ggufFile: GGUFFile?
        do {
            if gguf { ggufFile = try GGUFFile(url: directory) } else { headers = (try readConfig(directory: directory), try WeightFiles.open(directory: directory)) }
        } catch { failure = "\(error)" }
        if let f = try node.firstFailure(failure.isEmpty ? nil : failure) {
            throw DistributedError.inputs(f.message(on: node.rank, doing: "read \(directory.path)"))
        }
        let storage = { (floats: Int) throws -> (UnsafeMutableBufferPointer<Float>, AnyObject?, fill: Bool) in
            let buffer = try NodeSharedBuffer(bytes: floats * MemoryLayout<Float>.stride, node: node)
            let p = buffer.pointer.bindMemory(to: Float.self, capacity: floats)
            if buffer.isLeader { p.initialize(repeating: 0, count: floats) }
            return (UnsafeMutableBufferPointer(start: p, count: floats), buffer, fill: buffer.isLeader)
        }
        do {
            if let ggufFile {
                model = try load(gguf: ggufFile, allowNonFinite: allowNonFinite, storage: storage)
            } else {
                let (config, weights) = headers!
                model = try load(directory: directory, config: config, weights: weights, allowNonFinite: allowNonFinite, storage: storage)
            }
        } catch { failure = "\(error)" }
        // The leader filled the window (or failed): everyone on the node learns which.
        if let f = try node.firstFailure(failure.isEmpty ? nil : failure) {
            throw DistributedError.inputs(f.message(on: node.rank, doing: "load \(directory.path) into this node's shared memory"))
        }
        guard let model else { throw DistributedError.inputs("\(directory.path): not loaded") }
        return model
    }
}
