import MPI

/// Checks that every rank started on the same inputs (model, recipe, data), given each input's
/// name and this rank's content hash. With no shared filesystem a stale copy on one host is easy
/// to miss; the job would then train on different data per rank or mix different weights.
/// Collective: every rank throws the same error, naming the first input and the ranks whose
/// contents differ from rank 0's, so no rank is left waiting.
public func verifySameInputs(_ inputs: [(name: String, hash: UInt64)], comm: Communicator) throws {
    guard comm.size > 1 else { return }
    let mine = inputs.map { Int(bitPattern: UInt($0.hash)) }
    let all = try comm.allgather(mine)
    let n = inputs.count
    for (k, input) in inputs.enumerated() {
        let root = all[k]
        let differing = (1..<comm.size).filter { all[$0 * n + k] != root }
        guard !differing.isEmpty else { continue }
        let list = differing.map { "rank \($0)" }.joined(separator: ", ")
        throw DistributedError.inputs("\(list) started with different contents of \(input.name) than rank 0 "
                                    + "(a stale or different copy on that host?); every rank must read the same file")
    }
}
