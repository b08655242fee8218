import Reporting
import Kernels
import Foundation
import Model
import MPI
import Distributed
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Data-parallel distillation / training loop.
///
/// Each step takes the global batch of `settings.batch` sequences for that step (the same on any
/// number of ranks), gives each rank its contiguous share, runs teacher forward + student
/// forward/backward in micro-batches, and sums gradients over ranks in fused buckets. With
/// several ranks the optimizer is sharded (ZeRO-1, `GradientSync`): each rank runs the clipped
/// AdamW step on its part of the buffer and the parameters are all-gathered. Pruning masks are
/// re-applied after each step.
public final class Trainer {
    public let student: GPT2
    public let teacher: GPT2?
    /// The teacher as the packed model that runs its forward (its dense F32 weights read where
    /// they lie: no copy).
    private let packedTeacher: PackedGPT2?
    public let settings: DistillSettings
    public let sampler: BatchSampler
    public let valid: [Int32]?
    public let comm: Communicator
    public let optimizer: AdamW
    public private(set) var history: [StepLog] = []
    /// Called before each step with the step index (gradual pruning changes masks here).
    public var beforeStep: [(Int) throws -> Void] = []
    /// Where checkpoints go (nil: none).
    public var checkpoint: Checkpoint?
    /// The caller's state stored in checkpoints (a recipe's progress).
    public var checkpointExtra: JSONValue?
    /// Label printed in progress lines.
    public var label = "distill"
    /// How the job runs (overlap, sharding, recomputation, output, interruption).
    public let options: RunOptions
    /// The optimizer is sharded over ranks (ZeRO-1): asked for, and there are several ranks.
    public var shardOptimizer: Bool { options.shardOptimizer && comm.size > 1 }
    /// Sequences per forward/backward on this rank (`settings.microBatch`, or the most that fit).
    public let microBatch: Int
    /// What the trainer allocates on top of the models (at the chosen micro-batch).
    public let memory: MemoryEstimate
    /// Bytes each rank sends (and receives) per step for the gradients and parameters.
    public var bytesPerStep: Int { sync.bytesPerStep }
    /// Stop (with a checkpoint) after this many completed steps, as if interrupted there.
    public var stopAfterStep: Int?
    private let schedule: LRSchedule
    /// Time per phase of the step (printed at the end with SQUEEZE_PROFILE=1).
    public let profile = PhaseTimer()
    private let sync: GradientSync
    /// The intermediate-layer terms (nil without `hidden` or `attention` weights).
    private let intermediate: IntermediateDistillation?

    /// Collective (every rank builds its trainer at the same point).
    public init(student: GPT2, teacher: GPT2?, settings: DistillSettings, train: TokenDataset, valid: TokenDataset?,
                comm: Communicator, run: RunOptions = RunOptions()) throws {
        try settings.validate()
        guard settings.seq <= student.config.nPositions else {
            throw TrainingError.config("distill.seq \(settings.seq) exceeds the model's n_positions \(student.config.nPositions)")
        }
        if let t = teacher, t.config.vocabSize != student.config.vocabSize {
            throw TrainingError.config("teacher vocabulary (\(t.config.vocabSize)) differs from the student's (\(student.config.vocabSize))")
        }
        // What the step will allocate on top of the models and data already in memory, against
        // what the node has, before any of it (gradients, AdamW's moments, buffers) is allocated:
        // the micro-batch (unless given) is the largest that fits.
        var job = MemoryEstimate.DistillationJob(student: student.forms, teacher: settings.alpha > 0 ? teacher?.forms : nil, settings: settings)
        job.ranks = comm.size
        job.ranksPerNode = comm.size > 1 ? try comm.splitShared().size : 1
        job.shardOptimizer = run.shardOptimizer
        job.recompute = run.recompute
        job.tokens = train.count
        job.loaded = true
        job.gradientsAllocated = student.params.hasGradients
        let choice = try MemoryEstimate.microBatch(job)
        // Every rank takes the smallest choice, so the micro-batches (and the sums) agree.
        self.microBatch = try comm.allreduce(choice.microBatch, op: .min)
        self.memory = choice.estimate
        self.student = student
        self.teacher = settings.alpha > 0 ? teacher : nil
        self.packedTeacher = try self.teacher.map { try PackedGPT2($0) }
        self.settings = settings
        self.sampler = try BatchSampler(data: train, T: settings.seq, seed: settings.seed)
        self.valid = valid.map { v in Array(v.tokens.prefix(settings.validationTokens(parameters: student.params.parameterCount) + 1)).map { Int32($0) } }
        self.comm = comm
        self.options = run
        self.intermediate = try IntermediateDistillation(settings: settings, student: student, teacher: settings.alpha > 0 ? teacher : nil)
        self.sync = try GradientSync(model: student, comm: comm, overlap: run.overlapAllreduce, sharded: run.shardOptimizer)
        self.optimizer = AdamW(ranges: sync.ownedRanges, beta1: settings.beta1, beta2: settings.beta2, weightDecay: settings.weightDecay)
        self.schedule = LRSchedule(lr: settings.lr, warmup: settings.warmupSteps, total: settings.steps, minRatio: settings.minLRRatio)
    }

    /// Resumes optimizer, step and history from a checkpoint (the model must be loaded from its `model/`).
    public func resume(from cp: Checkpoint) throws -> Int {
        let state = try cp.readState()
        guard state.settings == settings else {
            throw TrainingError.checkpoint("\(cp.directory.path): written with different settings; resume with the same recipe/options")
        }
        try cp.restore(optimizer: optimizer, state: state, parameterCount: student.params.count)
        history = state.history
        checkpointExtra = state.extra
        return state.step
    }

    /// Validation perplexity (nil without validation data).
    public func validate() throws -> Double? {
        guard let valid, valid.count > settings.seq else { return nil }
        let r = try evaluatePerplexity(model: student, tokens: valid, context: settings.seq, stride: settings.seq,
                                       batch: microBatch, comm: comm)
        return r.perplexity
    }

    /// Runs steps `start..<settings.steps`; returns the step logs.
    @discardableResult
    public func run(from start: Int = 0) throws -> [StepLog] {
        var stepTimes: [Double] = []
        for step in start..<settings.steps {
            for hook in beforeStep { try hook(step) }
            guard !sync.bucketsStale(for: student) else {
                throw TrainingError.config("\(label): the student's layer forms changed during distillation (start a new trainer)")
            }
            var log = try self.step(step)
            stepTimes.append(Double(settings.batch * settings.seq) / log.tokensPerSecond)
            let isLast = step + 1 == settings.steps
            if (settings.evalEvery > 0 && (step + 1) % settings.evalEvery == 0) || isLast {
                log.validPerplexity = try validate()
            }
            history.append(log)
            report(log, stepTimes: stepTimes)
            let stop = try comm.allreduce(options.interruptRequested() ? 1 : 0, op: .max) > 0
            let pause = stopAfterStep == step + 1
            if let cp = checkpoint, stop || pause || isLast || (settings.checkpointEvery > 0 && (step + 1) % settings.checkpointEvery == 0) {
                try writeCheckpoint(cp, nextStep: step + 1)
            }
            if stop {
                Console.endProgress()
                throw TrainingError.interrupted(step: step + 1)
            }
            if pause { break }
        }
        Console.endProgress()
        if options.printProfile { Console.status(profile.summary()) }
        return history
    }

    /// One optimizer step: the rank's share of the global batch in micro-batches (teacher
    /// forward, student forward, fused head and loss, backward with the bucket reductions under
    /// way), the summed losses, the global gradient norm, clipping, AdamW and the masks.
    private func step(_ step: Int) throws -> StepLog {
        let t0 = Runtime.wtime(), bytes0 = Communicator.trafficBytes
        let globalTokens = settings.batch * settings.seq
        let lr = schedule.at(step)
        let starts = Array(sampler.starts(step: step, globalBatch: settings.batch)[share(settings.batch, rank: comm.rank, size: comm.size)])
        student.params.zeroGrads()
        var sums = [0.0, 0.0, 0.0, 0.0]   // kd, ce, hidden, attention
        let chunks = stride(from: 0, to: starts.count, by: microBatch).map { Array(starts[$0..<min($0 + microBatch, starts.count)]) }
        sync.begin()
        for (k, chunk) in chunks.enumerated() {
            let s = try microBatchStep(chunk, last: k == chunks.count - 1, globalTokens: globalTokens)
            for i in sums.indices { sums[i] += s[i] }
        }
        try profile.time("all-reduce wait") { try sync.finish() }
        try comm.allreduce(&sums)
        student.maskGradients()
        // The global gradient norm: each rank's owned ranges (all of them without sharding).
        let grads = student.params.grads.baseAddress!
        var normSquared = sync.ownedRanges.reduce(0.0) { $0 + sumOfSquares(grads + $1.lowerBound, count: $1.count) }
        if sync.sharded { normSquared = try comm.allreduce(normSquared) }
        let norm = normSquared.squareRoot()
        // Loss sums and gradients are the same on every rank after the reductions, so every
        // rank stops here together, before the weights or the checkpoint see the bad values.
        if !(sums.allSatisfy(\.isFinite) && norm.isFinite) {
            Console.endProgress()
            throw TrainingError.nonFinite(label: label, step: step + 1, detail: "kd sum \(sums[0]), ce sum \(sums[1]), gradient norm \(norm)",
                                          checkpoint: checkpoint.flatMap { $0.exists ? $0.directory.path : nil })
        }
        try profile.time("clip + AdamW") {
            let coef = clipCoefficient(norm: norm, maxNorm: settings.gradClip)
            if coef < 1 { for r in sync.ownedRanges { Kernels.scale(grads + r.lowerBound, count: r.count, by: coef) } }
            optimizer.update(student.params, lr: lr)
            try sync.gatherParameters()
            student.applyMasks()
        }
        return log(step: step, sums: sums, norm: norm, lr: lr, seconds: Runtime.wtime() - t0, bytes: Communicator.trafficBytes - bytes0)
    }

    /// Forward and backward of one micro-batch (sequences starting at `chunk`); returns its loss
    /// sums (kd, ce, hidden, attention). The last one lets backward start the bucket reductions.
    private func microBatchStep(_ chunk: [Int], last: Bool, globalTokens: Int) throws -> [Double] {
        let (ids, targets) = sampler.batch(chunk)
        let n = chunk.count, T = settings.seq
        // The teacher runs the inference forward: only its final hidden states are kept.
        let capture = intermediate?.capture(B: n, T: T)
        let teacherHidden = try profile.time("teacher forward") {
            try packedTeacher.map { ($0 as InferenceNetwork, try $0.hiddenStates(ids: ids, B: n, T: T, capture: capture)) }
        }
        try profile.time("student forward") { try student.forward(ids: ids, B: n, T: T, recompute: options.recompute) }
        let (kd, ce) = profile.time("head + loss") { () -> (Double, Double) in
            let h = student.trainingHidden!
            return targets.withUnsafeBufferPointer { tg in
                student.headLoss(hidden: h.hidden, N: n * T, targets: tg.baseAddress!, teacher: teacherHidden,
                                 temperature: settings.temperature, alpha: settings.alpha, scale: 1 / Float(globalTokens), dHidden: h.gradient)
            }
        }
        // Errors from polling the in-flight reductions resurface in finish().
        let extra = try profile.time("backward") {
            try student.backward(onLayerDone: last ? { [sync] l in try? sync.layerDone(l) } : nil,
                                 intermediate: intermediate?.targets(globalTokens: globalTokens))
        }
        return [kd, ce, extra.hidden, extra.attention]
    }

    /// The step's log line from its summed losses.
    private func log(step: Int, sums: [Double], norm: Double, lr: Float, seconds dt: Double, bytes: Int) -> StepLog {
        let globalTokens = Double(settings.batch * settings.seq)
        let kdMean = sums[0] / globalTokens, ceMean = sums[1] / globalTokens
        let ceWeight = (teacher != nil) ? Double(1 - settings.alpha) : 1
        var log = StepLog(step: step + 1, loss: kdMean + ceWeight * ceMean, kd: kdMean, ce: ceMean, lr: Double(lr),
                          gradNorm: norm, tokensPerSecond: globalTokens / dt, bytesCommunicated: bytes, validPerplexity: nil)
        if let intermediate {
            let (h, a) = intermediate.means(hiddenSum: sums[2], attentionSum: sums[3], globalTokens: settings.batch * settings.seq)
            if settings.hidden > 0 { log.hidden = h }
            if settings.attention > 0 { log.attention = a }
            log.loss += Double(settings.hidden) * h + Double(settings.attention) * a
        }
        return log
    }

    /// Writes a checkpoint (collective: rank 0 writes, the optimizer shards are gathered to it).
    public func writeCheckpoint(_ cp: Checkpoint, nextStep: Int) throws {
        let state = Checkpoint.State(step: nextStep, optimizerStep: optimizer.step, settings: settings, history: history, extra: checkpointExtra)
        let moments = Checkpoint.Moments(count: student.params.count) { [sync, optimizer] which, sink in
            let m = which == 0 ? optimizer.m : optimizer.v
            try m.withUnsafeBufferPointer { try sync.gatherToRoot($0.baseAddress!, write: sink) }
        }
        try cp.write(model: student, state: state, moments: moments, comm: comm)
    }

    private func report(_ log: StepLog, stepTimes: [Double]) {
        if options.jsonLines {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            enc.keyEncodingStrategy = .convertToSnakeCase
            if let d = try? enc.encode(log) { Console.print(String(decoding: d, as: UTF8.self)) }
            return
        }
        let recent = stepTimes.suffix(20)
        let avg = recent.reduce(0, +) / Double(max(recent.count, 1))
        let eta = avg * Double(settings.steps - log.step)
        var line = String(format: "%@ step %d/%d  loss %.4f  kd %.4f  ce %.4f  lr %.2e  |g| %.2f  %.0f tok/s  ETA %@",
                          label, log.step, settings.steps, log.loss, log.kd, log.ce, log.lr, log.gradNorm, log.tokensPerSecond, formatDuration(eta))
        if let p = log.validPerplexity {
            line += String(format: "  valid ppl %.3f", p)
            Console.progress(line)
            Console.endProgress()
        } else {
            Console.progress(line)
        }
    }
}

/// "1h02m", "3m20s", "12s".
public func formatDuration(_ s: Double) -> String {
    guard s.isFinite else { return "?" }
    let t = Int(s.rounded())
    if t >= 3600 { return String(format: "%dh%02dm", t / 3600, (t % 3600) / 60) }
    if t >= 60 { return String(format: "%dm%02ds", t / 60, t % 60) }
    return "\(t)s"
}

/// Accumulated wall time per named phase.
public final class PhaseTimer {
    public private(set) var seconds: [String: Double] = [:]
    private var order: [String] = []

    @inline(__always)
    public func time<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let t0 = Runtime.wtime()
        defer {
            if seconds[name] == nil { order.append(name) }
            seconds[name, default: 0] += Runtime.wtime() - t0
        }
        return try body()
    }

    public func summary() -> String {
        let total = seconds.values.reduce(0, +)
        return "time per phase: " + order.map { String(format: "%@ %.2fs (%.0f%%)", $0, seconds[$0]!, 100 * seconds[$0]! / max(total, 1e-9)) }.joined(separator: ", ")
    }
}
