import CMPI
import MPI

/// `squeeze bench allreduce`: checks the sum and compares our wrapper to a bare MPI_Allreduce.
public struct AllreduceBenchResult: Codable, Sendable {
    public var ranks: Int
    public var bytes: Int
    public var correct: Bool
    public var wrapperSeconds: Double
    public var bareSeconds: Double
    public var ratio: Double
    /// Bus bandwidth in GB/s: 2 (n-1)/n * bytes / time (NCCL-tests convention).
    public var busBandwidthGBs: Double
}

/// Runs on every rank; all ranks return the same result.
public func runAllreduceBench(comm: Communicator, bytes: Int, repeats: Int = 10) throws -> AllreduceBenchResult {
    let count = max(1, bytes / MemoryLayout<Float>.size)
    var buffer = [Float](repeating: 0, count: count)
    // Correctness: rank r contributes (r + 1) * (i % 7); the sum is (i % 7) * n (n + 1) / 2.
    for i in 0..<count { buffer[i] = Float(comm.rank + 1) * Float(i % 7) }
    try comm.allreduce(&buffer)
    let n = Float(comm.size)
    var correct = true
    for i in 0..<count where buffer[i] != Float(i % 7) * n * (n + 1) / 2 { correct = false; break }
    correct = try comm.allreduce(correct ? 0 : 1, op: .max) == 0

    try comm.barrier()
    let wrapper = {
        try buffer.withUnsafeMutableBufferPointer { try comm.allreduce($0) }
    }
    let bare = {
        buffer.withUnsafeMutableBufferPointer { p in
            _ = MPI_Allreduce(squeeze_in_place(), p.baseAddress, Int32(count), squeeze_type_float(), squeeze_op_sum(), comm.handle)
        }
    }
    var (tw, tb) = try bestTimes(repeats: repeats, { try comm.barrier(); try wrapper() }, { try comm.barrier(); bare() })
    // Every rank reports the slowest rank's best time.
    tw = try comm.allreduce(tw, op: .max)
    tb = try comm.allreduce(tb, op: .max)
    let nn = Double(comm.size)
    let busBW = nn > 1 ? 2 * (nn - 1) / nn * Double(count * 4) / tw / 1e9 : 0
    return AllreduceBenchResult(ranks: comm.size, bytes: count * 4, correct: correct, wrapperSeconds: tw,
                                bareSeconds: tb, ratio: tw / tb, busBandwidthGBs: busBW)
}
