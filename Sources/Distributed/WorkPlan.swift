import MPI
import Tensor

/// Assigns independent jobs to ranks by cost, greedy longest-first (LPT): the most expensive
/// job goes to the least-loaded rank. The plan is a pure function of the costs and the rank
/// count, so every rank computes the same one.
public func planJobs(costs: [Double], ranks: Int) -> [Int] {
    var owner = [Int](repeating: 0, count: costs.count)
    var load = [Double](repeating: 0, count: max(ranks, 1))
    let order = costs.indices.sorted { costs[$0] > costs[$1] || (costs[$0] == costs[$1] && $0 < $1) }
    for j in order {
        let r = load.indices.min { load[$0] < load[$1] || (load[$0] == load[$1] && $0 < $1) }!
        owner[j] = r
        load[r] += costs[j]
    }
    return owner
}

/// Runs `compute(j)` for every job on its owner rank (see `planJobs`) and gives every rank all
/// results: each owner broadcasts its tensors. A job that throws on its owner makes every rank
/// throw the same error (no rank is left waiting). With one rank it is a plain loop.
public func distributedCompute(costs: [Double], comm: Communicator, compute: (Int) throws -> [Tensor]) throws -> [[Tensor]] {
    let owner = planJobs(costs: costs, ranks: comm.size)
    var local: [Int: Result<[Tensor], Error>] = [:]
    for j in costs.indices where owner[j] == comm.rank {
        do { local[j] = .success(try compute(j)) } catch { local[j] = .failure(error) }
    }
    guard comm.size > 1 else {
        return try costs.indices.map { try local[$0]!.get() }
    }
    var results: [[Tensor]] = []
    for j in costs.indices {
        let root = owner[j]
        // Header: error message (empty if fine), then shapes, then the data.
        var message = ""
        var shapes: [Int] = []
        var data: [Float] = []
        if root == comm.rank {
            switch local[j]! {
            case .failure(let e): message = "\(e)"
            case .success(let ts):
                for t in ts { shapes.append(t.shape.count); shapes += t.shape }
                data = ts.flatMap { $0.data }
            }
        }
        if let f = try comm.firstFailure(message.isEmpty ? nil : message) { throw DistributedError.plan("job \(j) failed on rank \(f.rank): \(f.message)") }
        try comm.broadcast(&shapes, root: root)
        try comm.broadcast(&data, root: root)
        var ts: [Tensor] = []
        var i = 0, offset = 0
        while i < shapes.count {
            let rank = shapes[i]
            let shape = Array(shapes[(i + 1)..<(i + 1 + rank)])
            let n = shape.reduce(1, *)
            ts.append(try Tensor(shape: shape, data: Array(data[offset..<(offset + n)])))
            offset += n
            i += 1 + rank
        }
        results.append(ts)
    }
    return results
}
