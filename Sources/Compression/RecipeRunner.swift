import Reporting
import Foundation
import Model
import MPI
import Tensor
import Training

/// Where a recipe run stands, kept in checkpoints so `--resume` continues exactly: the stage, the
/// progressive step within it, whether its compression is done and its distillation under way,
/// the reports so far and the rank schedule of a progressive low-rank stage.
public struct RecipeProgress: Codable, Equatable {
    public var stage = 0
    /// Progressive sub-step within the stage.
    public var substep = 0
    /// True when the compression of (stage, substep) is applied and its distillation is under way.
    public var distilling = false
    public var reports: [LayerReport] = []
    /// Layer -> ranks of the progressive low-rank stage under way.
    public var schedule: [String: [Int]] = [:]

    public init(stage: Int = 0, substep: Int = 0, distilling: Bool = false) {
        self.stage = stage
        self.substep = substep
        self.distilling = distilling
    }

    /// Absent keys take their defaults (a checkpoint written between stages has no schedule).
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        stage = try c.decode(Int.self, forKey: .stage)
        substep = try c.decodeIfPresent(Int.self, forKey: .substep) ?? 0
        distilling = try c.decodeIfPresent(Bool.self, forKey: .distilling) ?? false
        reports = try c.decodeIfPresent([LayerReport].self, forKey: .reports) ?? []
        schedule = try c.decodeIfPresent([String: [Int]].self, forKey: .schedule) ?? [:]
    }
}

/// Runs a recipe on a model: each stage's one-shot compression, then its distillation from the
/// teacher. Gradual (cubic) pruning happens inside the distillation steps (Prune OFA: prune
/// while distilling, then fine-tune with the masks fixed); progressive low rank and Kronecker
/// compress in `progressive` steps, each followed by an equal share of the stage's distillation.
/// A checkpoint after every stage and during distillation makes `--resume` continue exactly.
public final class RecipeRunner {
    public let recipe: Recipe
    public let student: GPT2
    public let teacher: GPT2?
    public let comm: Communicator
    public let compressor: Compressor
    /// How the job runs (the CLI's one value, passed on to every trainer).
    public let options: RunOptions
    public var train: TokenDataset?
    public var valid: TokenDataset?
    /// Checkpoint directory (nil: none).
    public var checkpoint: Checkpoint?
    /// What has been done (reports, schedule), as checkpoints record it.
    public private(set) var progress = RecipeProgress()
    public var reports: [LayerReport] { progress.reports }
    /// Wall seconds spent in the compression methods (factorizations, masks), distillation excluded.
    public private(set) var compressionSeconds = 0.0
    public private(set) var history: [StepLog] = []
    private var distillStepsDone = 0
    /// Validation perplexity after each stage (nil without validation data or distillation).
    public private(set) var stagePerplexity: [Int: Double] = [:]

    public init(recipe: Recipe, student: GPT2, teacher: GPT2?, comm: Communicator, options: RunOptions = RunOptions()) {
        self.recipe = recipe
        self.student = student
        self.teacher = teacher
        self.comm = comm
        self.options = options
        self.compressor = Compressor(model: student, comm: comm)
        compressor.calibration = recipe.calibration
        compressor.seed = recipe.seed
    }

    /// Checks that every stage can run before doing any work (targets resolve, data present).
    public func validate() throws {
        for st in recipe.stages {
            _ = try compressor.resolve(st.method.targets, at: "stages[\(st.index)].\(st.method.name)")
            if st.distill != nil && train == nil { throw CompressionError.recipe("stages[\(st.index)].distill needs training text: pass --data") }
            if let d = st.distill, d.seq > student.config.nPositions {
                throw CompressionError.recipe("stages[\(st.index)].distill.seq \(d.seq) exceeds the model's n_positions \(student.config.nPositions)")
            }
            if case .prune(let p) = st.method, p.method != .magnitude, train == nil {
                throw CompressionError.recipe("stages[\(st.index)].prune.method \(p.method.rawValue) needs calibration text: pass --data")
            }
            if st.method.calibrated, train == nil {
                throw CompressionError.recipe("stages[\(st.index)].\(st.method.name).whiten needs calibration text: pass --data")
            }
            if let q = st.quantize {
                _ = try compressor.resolve(q.targets, at: "stages[\(st.index)].quantize")
                if q.method == .gptq && train == nil { throw CompressionError.recipe("stages[\(st.index)].quantize.method gptq needs calibration text: pass --data") }
            }
        }
    }

    /// Runs (or resumes) every stage.
    public func run(resume: Bool = false) throws {
        try validate()
        if let t = train { compressor.calibrationTokens = Array(t.tokens) }
        var start = RecipeProgress()
        if resume, let cp = checkpoint, cp.exists {
            let state = try cp.readState()
            if let extra = state.extra {
                do { start = try JSONDecoder().decode(RecipeProgress.self, from: JSONEncoder().encode(extra)) } catch {
                    throw CompressionError.recipe("\(cp.directory.path)/state.json: 'extra' is not a recipe's progress: \(error)")
                }
            }
            progress = start
            Console.status("resuming at stage \(start.stage)\(start.distilling ? " (distillation)" : "")")
        }
        for st in recipe.stages where st.index >= start.stage {
            let here = resume && st.index == start.stage
            try runStage(st, from: here ? start : RecipeProgress(stage: st.index), resume: here)
            if let cp = checkpoint { try writeStageCheckpoint(cp, next: st.index + 1) }
        }
    }

    /// The checkpoint's record of the progress at (stage, substep).
    func extraState(stage: Int, substep: Int, distilling: Bool) -> JSONValue? {
        var p = progress
        (p.stage, p.substep, p.distilling) = (stage, substep, distilling)
        return try? JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(p))
    }

    /// A checkpoint between stages: the model and the position, no optimizer state (the next
    /// stage's distillation starts a fresh optimizer).
    func writeStageCheckpoint(_ cp: Checkpoint, next: Int) throws {
        let state = Checkpoint.State(step: 0, optimizerStep: 0, settings: DistillSettings(), history: history,
                                     extra: extraState(stage: next, substep: 0, distilling: false))
        try cp.write(model: student, state: state, moments: nil, comm: comm)
    }

    func runStage(_ st: Recipe.Stage, from pos: RecipeProgress, resume: Bool) throws {
        let label = "stage \(st.index + 1)/\(recipe.stages.count) \(st.method.name)"
        switch st.method {
        case .prune(let p) where p.schedule == .cubic:
            try runGradualPrune(st, p, resume: resume && pos.distilling, label: label)
        case .lowrank(let l) where l.progressive > 1:
            let names = try compressor.resolve(l.targets, at: "stages[\(st.index)].lowrank")
            // Target ranks from the rule on the weights as they are at the start of the stage;
            // intermediate ranks linear. A resumed run takes the schedule from the checkpoint.
            if !(resume && names.allSatisfy { progress.schedule[$0]?.count == l.progressive }) {
                progress.schedule = [:]
                for n in names {
                    let w = compressor.denseWeight(n)
                    let target = try LowRank.rank(for: l.rule, rows: w.shape[0], cols: w.shape[1], singularValues: w.singularValuesDouble())
                    progress.schedule[n] = LowRank.progressiveRanks(full: compressor.currentRank(n), target: target, stages: l.progressive)
                }
            }
            try runProgressive(st, steps: l.progressive, from: pos, resume: resume, label: label) { k in
                Console.status("\(label): progressive step \(k + 1)/\(l.progressive)")
                return try compressor.lowrank(l, stage: st.index, ranks: progress.schedule.mapValues { $0[k] })
            }
            progress.schedule = [:]
        case .kronecker(let k) where k.progressive > 1:
            // The budget falls from 1 to k.budget in equal steps; each step re-factorizes the
            // layers (in the shape the first step chose) and distils for its share of the steps.
            try runProgressive(st, steps: k.progressive, from: pos, resume: resume, label: label) { step in
                let budget = 1 - (1 - k.budget) * Double(step + 1) / Double(k.progressive)
                Console.status("\(label): progressive step \(step + 1)/\(k.progressive), budget \(String(format: "%.3f", budget))")
                return try compressor.kronecker(k, stage: st.index, budget: budget)
            }
        default:
            if !(resume && pos.distilling) { try compress(st, label: label) }
            if let d = st.distill.map(scaled) { try distill(d, stage: st.index, substep: 0, resume: resume && pos.distilling, label: label) }
        }
    }

    /// A one-shot stage's compression: its method, then its quantization (SparseGPT and GPTQ in the
    /// same stage: one joint sweep).
    private func compress(_ st: Recipe.Stage, label: String) throws {
        if case .distillOnly = st.method, st.quantize == nil { return }
        Console.status("\(label): compressing")
        try timed { try compressor.compress(st) }
    }

    /// A progressive stage: `steps` compressions, each followed by an equal share of the stage's
    /// distillation; a resumed run skips the compression it had already applied.
    private func runProgressive(_ st: Recipe.Stage, steps: Int, from pos: RecipeProgress, resume: Bool, label: String,
                                compress: (Int) throws -> [LayerReport]) throws {
        for k in pos.substep..<steps {
            let skipCompress = resume && k == pos.substep && pos.distilling
            if !skipCompress { try timed { try compress(k) } }
            if var d = st.distill.map(scaled) {
                d.steps = max(1, d.steps / steps)
                d.warmup = d.warmup.map { min($0, d.steps) }
                try distill(d, stage: st.index, substep: k, resume: skipCompress, label: "\(label) step \(k + 1)/\(steps)")
            }
        }
    }

    /// Runs one compression call, adding its reports and its wall time to `compressionSeconds`.
    private func timed(_ body: () throws -> [LayerReport]) throws {
        let t0 = Runtime.wtime()
        defer { compressionSeconds += Runtime.wtime() - t0 }
        progress.reports += try body()
    }

    /// Prune OFA: magnitude masks grow on the cubic schedule every `frequency` steps until
    /// fraction `end` of the steps, then stay fixed while distillation continues.
    func runGradualPrune(_ st: Recipe.Stage, _ p: Recipe.PruneSpec, resume: Bool, label: String) throws {
        let d = scaled(st.distill!)
        let names = try compressor.resolve(p.targets, at: "stages[\(st.index)].prune")
        // The final sparsity lands on a step that runs (the last one at the latest).
        let pruneSteps = max(0, min(d.steps - 1, Int((p.end * Double(d.steps)).rounded())))
        // --distill-scale compresses the whole schedule: the pruning interval scales with the steps.
        let frequency = max(1, Int((Double(p.frequency) * options.distillScale).rounded()))
        let states = names.map { compressor.state($0) }
        var lastSparsity = -1.0
        let hook: (Int) throws -> Void = { [unowned self] step in
            guard step <= pruneSteps, step % frequency == 0 || step == pruneSteps else { return }
            let s = Pruning.cubicSparsity(step: step, steps: pruneSteps, initial: p.initial, final: p.sparsity)
            guard s != lastSparsity else { return }
            lastSparsity = s
            try self.compressor.prune(p, sparsity: s, stage: st.index, names: names)
        }
        try distill(d, stage: st.index, substep: 0, resume: resume, label: label, hook: hook)
        for (k, n) in names.enumerated() {
            progress.reports.append(compressor.report(stage: st.index, n, "magnitude \(Int((p.sparsity * 100).rounded()))% cubic\(p.scope == .global ? " global" : "") + KD",
                                                      before: states[k]))
        }
    }

    /// A stage's distillation settings with `distillScale` applied.
    func scaled(_ given: DistillSettings) -> DistillSettings { given.scaled(by: options.distillScale) }

    /// Distils the student with the (already scaled) settings of a stage.
    func distill(_ settings: DistillSettings, stage: Int, substep: Int, resume: Bool, label: String, hook: ((Int) throws -> Void)? = nil) throws {
        guard let train else { throw CompressionError.recipe("stages[\(stage)].distill needs training text: pass --data") }
        let trainer = try Trainer(student: student, teacher: teacher, settings: settings, train: train, valid: valid, comm: comm, run: options)
        trainer.label = label
        trainer.checkpoint = checkpoint
        trainer.checkpointExtra = extraState(stage: stage, substep: substep, distilling: true)
        if let hook { trainer.beforeStep.append(hook) }
        var start = 0
        if resume, let cp = checkpoint { start = try trainer.resume(from: cp) }
        if let limit = options.stopAfterDistillSteps, distillStepsDone + settings.steps - start > limit {
            trainer.stopAfterStep = start + max(limit - distillStepsDone, 0)
        }
        // (Pruning masks need no replay: the checkpoint's model carries them.)
        let h = try trainer.run(from: start)
        history += h.filter { log in !history.contains(log) }
        distillStepsDone += (h.last?.step ?? start) - start
        if let stop = trainer.stopAfterStep, h.last?.step == stop, stop < settings.steps {
            throw TrainingError.interrupted(step: stop)
        }
        if let p = h.last?.validPerplexity { stagePerplexity[stage] = p }
        teacher?.releaseActivations()
    }
}
