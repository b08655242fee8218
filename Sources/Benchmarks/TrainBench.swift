import Reporting
import CMPI
import Foundation
import Distributed
import Model
import MPI
import Tensor
import Training

/// `squeeze bench train`: a distilgpt2-shaped KD step (teacher forward + student forward/backward
/// + AdamW) over the ranks of the world, against the sgemm peak measured in the same run; the
/// gradient all-reduce against a bare MPI_Allreduce of the same bytes.
public struct TrainBenchResult: Codable, Sendable {
    public var ranks: Int
    public var threadsPerRank: Int
    public var B: Int
    public var T: Int
    public var sgemmPeakGflops: Double
    /// Global tokens per second of KD steps (best step, overlapped all-reduce).
    public var tokensPerS: Double
    /// KD FLOPs (teacher 1x + student 3x forward) per second over the whole job, as % of the
    /// peak of all ranks (peak measured on one rank x ranks).
    public var percentOfPeak: Double
    public var tokensPerSNoOverlap: Double
    /// Without the sharded optimizer (all-reduce, whole AdamW on every rank).
    public var tokensPerSUnsharded: Double
    /// Bytes each rank sends per step for gradients and parameters (reduce-scatter + all-gather,
    /// or all-reduce: the same).
    public var bytesPerStep: Int
    /// The micro-batch the trainer chose.
    public var microBatch: Int
    public var gradientBytes: Int
    public var allreduceSeconds: Double
    public var bareAllreduceSeconds: Double
    public var allreduceRatio: Double
    public var flopConvention: String

    enum CodingKeys: String, CodingKey {
        case ranks, threadsPerRank = "threads_per_rank", B, T, sgemmPeakGflops = "sgemm_peak_gflops", tokensPerS = "tokens_per_s"
        case percentOfPeak = "percent_of_peak", tokensPerSNoOverlap = "tokens_per_s_no_overlap", gradientBytes = "gradient_bytes"
        case tokensPerSUnsharded = "tokens_per_s_unsharded", bytesPerStep = "bytes_per_step", microBatch = "micro_batch"
        case allreduceSeconds = "allreduce_seconds", bareAllreduceSeconds = "bare_allreduce_seconds", allreduceRatio = "allreduce_ratio"
        case flopConvention = "flop_convention"
    }
}

public func runTrainBench(comm: Communicator, config: GPT2Config = distilGPT2Config, B: Int = 4, T: Int = 256, steps: Int = 4) throws -> TrainBenchResult {
    // Peak: every rank measures alone at the same time, as during training.
    let peak = measureSgemmPeak()
    let peakAll = try comm.allreduce(peak)
    let student = try GPT2(config: config, seed: 1)
    let teacher = try GPT2(config: config, seed: 2)
    var rng = RandomGenerator(seed: 3)
    let tokens = (0..<200_000).map { _ in UInt16(rng.next() % UInt64(config.vocabSize)) }
    let data = TokenDataset(tokens: tokens, source: .init(fileURLWithPath: "random"))
    var s = DistillSettings()
    s.steps = steps; s.batch = B; s.seq = T; s.lr = 1e-4; s.microBatch = B; s.evalTokens = 2
    var bytesPerStep = 0
    func measure(overlap: Bool, sharded: Bool = true) throws -> Double {
        var run = RunOptions()
        (run.overlapAllreduce, run.shardOptimizer) = (overlap, sharded)
        let t = try Trainer(student: student, teacher: teacher, settings: s, train: data, valid: nil, comm: comm, run: run)
        bytesPerStep = t.bytesPerStep
        Console.quiet = true
        let h = try t.run()
        return h.dropFirst().map(\.tokensPerSecond).max() ?? h.last!.tokensPerSecond
    }
    let quiet = Console.quiet
    defer { Console.quiet = quiet }
    let tokOverlap = try measure(overlap: true)
    let tokPlain = try measure(overlap: false)
    let tokUnsharded = try measure(overlap: true, sharded: false)

    // The gradient all-reduce alone: our fused buckets vs one bare MPI_Allreduce of the same bytes.
    let sync = try GradientSync(model: student, comm: comm, overlap: false)
    let grads = student.params.grads
    let (tOurs, tBare) = try bestTimes(repeats: 5, {
        try comm.barrier(); sync.begin(); try sync.finish()
    }, {
        try comm.barrier()
        _ = MPI_Allreduce(squeeze_in_place(), grads.baseAddress, Int32(grads.count), squeeze_type_float(), squeeze_op_sum(), comm.handle)
    })
    let ours = try comm.allreduce(tOurs, op: .max), bare = try comm.allreduce(tBare, op: .max)
    let f = forwardFlopsPerToken(student, T: T)
    return TrainBenchResult(ranks: comm.size, threadsPerRank: BLAS.threads, B: B, T: T, sgemmPeakGflops: peakAll,
                            tokensPerS: tokOverlap, percentOfPeak: 100 * tokOverlap * 4 * f / 1e9 / peakAll,
                            tokensPerSNoOverlap: tokPlain, tokensPerSUnsharded: tokUnsharded, bytesPerStep: bytesPerStep, microBatch: B,
                            gradientBytes: grads.count * 4,
                            allreduceSeconds: ours, bareAllreduceSeconds: bare, allreduceRatio: comm.size > 1 ? ours / bare : 1,
                            flopConvention: "KD step = teacher forward + student forward and backward = 4 x (\(flopConvention.prefix(60))...)")
}
