import Reporting
import Foundation
import Model
import MPI
import Tensor
import Training

/// Runs a recipe on a model: each stage's one-shot compression, then its distillation from the
/// teacher. Gradual (cubic) pruning happens inside the distillation steps (Prune OFA: prune
/// while distilling, then fine-tune with the masks fixed); progressive low rank lowers the rank
/// in `progressive` steps, each followed by an equal share of the stage's distillation steps.
/// A checkpoint after every stage and during distillation makes `--resume` continue exactly.
public final class RecipeRunner {
    public let recipe: Recipe
    public let student: GPT2
    public let teacher: GPT2?
    public let comm: Communicator
    public let compressor: Compressor
    public var train: TokenDataset?
    public var valid: TokenDataset?
    /// Checkpoint directory (nil: none).
    public var checkpoint: Checkpoint?
    public var jsonLines = false
    public var overlapAllreduce = true
    /// Shard the optimizer over ranks (ZeRO-1) when there are several.
    public var shardOptimizer = true
    /// Polled by every distillation step (see `Trainer.interruptRequested`).
    public var interruptRequested: () -> Bool = { false }
    /// Print each distillation's time per phase.
    public var printProfile = false
    /// Multiplies every stage's distillation steps (and warmup), e.g. 0.1 for a quick run.
    public var distillScale = 1.0
    public private(set) var reports: [LayerReport] = []
    /// Wall seconds spent in the compression methods (factorisations, masks), distillation excluded.
    public private(set) var compressionSeconds = 0.0
    public private(set) var history: [StepLog] = []
    /// Rank schedule of the progressive stage under way (layer -> ranks), kept in checkpoints so a
    /// resumed run lowers the ranks exactly as the interrupted one would have.
    var schedule: [String: [Int]] = [:]
    /// Stop (checkpoint written, `TrainingError.interrupted`) after this many distillation steps
    /// in total, as an interruption would (tests, time-boxed runs).
    public var stopAfterDistillSteps: Int?
    private var distillStepsDone = 0
    /// Validation perplexity after each stage (nil without validation data or distillation).
    public private(set) var stagePerplexity: [Int: Double] = [:]

    public init(recipe: Recipe, student: GPT2, teacher: GPT2?, comm: Communicator) {
        self.recipe = recipe
        self.student = student
        self.teacher = teacher
        self.comm = comm
        self.compressor = Compressor(model: student, comm: comm)
        compressor.calibration = recipe.calibration
        compressor.seed = recipe.seed
    }

    /// Position to resume from, read from the checkpoint's extra state.
    public struct Position: Equatable {
        public var stage: Int
        /// Progressive sub-step within the stage.
        public var substep: Int
        /// True when the compression of (stage, substep) is applied and its distillation is under way.
        public var distilling: Bool
    }

    func position(of extra: [String: JSONValue]) -> Position? {
        guard let s = extra["stage"]?.intValue else { return nil }
        return Position(stage: s, substep: extra["substep"]?.intValue ?? 0, distilling: extra["distilling"]?.boolValue ?? false)
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
        }
    }

    /// Runs (or resumes) every stage.
    public func run(resume: Bool = false) throws {
        try validate()
        if let t = train { compressor.calibrationTokens = Array(t.tokens) }
        var start = Position(stage: 0, substep: 0, distilling: false)
        if resume, let cp = checkpoint, cp.exists {
            let state = try cp.readState()
            if let p = position(of: state.extra) { start = p }
            if let r = state.extra["reports"], let data = try? JSONEncoder().encode(r) {
                reports = (try? JSONDecoder().decode([LayerReport].self, from: data)) ?? []
            }
            for (layer, ranks) in state.extra["schedule"]?.objectValue ?? [:] {
                schedule[layer] = ranks.arrayValue?.compactMap(\.intValue)
            }
            Console.status("resuming at stage \(start.stage)\(start.distilling ? " (distillation)" : "")")
        }
        for st in recipe.stages where st.index >= start.stage {
            let resumingHere = st.index == start.stage && resume
            try runStage(st, from: resumingHere ? start : Position(stage: st.index, substep: 0, distilling: false), resume: resumingHere)
            if let cp = checkpoint { try writeStageCheckpoint(cp, next: st.index + 1) }
        }
    }

    func extraState(_ p: Position) -> [String: JSONValue] {
        var e: [String: JSONValue] = ["stage": .number(Double(p.stage)), "substep": .number(Double(p.substep)), "distilling": .bool(p.distilling)]
        if let d = try? JSONEncoder().encode(reports), let v = try? JSONDecoder().decode(JSONValue.self, from: d) { e["reports"] = v }
        if !schedule.isEmpty { e["schedule"] = .object(schedule.mapValues { .array($0.map { .number(Double($0)) }) }) }
        return e
    }

    /// A checkpoint between stages: the model and the position, no optimizer state (the next
    /// stage's distillation starts a fresh optimizer).
    func writeStageCheckpoint(_ cp: Checkpoint, next: Int) throws {
        let state = Checkpoint.State(step: 0, optimizerStep: 0, settings: DistillSettings(), history: history,
                                     extra: extraState(Position(stage: next, substep: 0, distilling: false)))
        try cp.write(model: student, state: state, moments: nil, comm: comm)
    }

    func runStage(_ st: Recipe.Stage, from pos: Position, resume: Bool) throws {
        let label = "stage \(st.index + 1)/\(recipe.stages.count) \(st.method.name)"
        switch st.method {
        case .prune(let p) where p.schedule == .cubic:
            try runGradualPrune(st, p, resume: resume && pos.distilling, label: label)
        case .lowrank(let l) where l.progressive > 1:
            let names = try compressor.resolve(l.targets, at: "stages[\(st.index)].lowrank")
            // Target ranks from the rule on the weights as they are at the start of the stage;
            // intermediate ranks linear. A resumed run takes the schedule from the checkpoint.
            if !(resume && names.allSatisfy { schedule[$0]?.count == l.progressive }) {
                schedule = [:]
                for n in names {
                    let w = compressor.denseWeight(n)
                    let target = try LowRank.rank(for: l.rule, rows: w.shape[0], cols: w.shape[1], singularValues: w.singularValuesDouble())
                    schedule[n] = LowRank.progressiveRanks(full: compressor.currentRank(n), target: target, stages: l.progressive)
                }
            }
            for k in pos.substep..<l.progressive {
                let skipCompress = resume && k == pos.substep && pos.distilling
                if !skipCompress {
                    var ranks: [String: Int] = [:]
                    for n in names { ranks[n] = schedule[n]![k] }
                    Console.status("\(label): progressive step \(k + 1)/\(l.progressive)")
                    reports += try timed { try compressor.lowrank(l, stage: st.index, ranks: ranks) }
                }
                if var d = st.distill.map(scaled) {
                    d.steps = max(1, d.steps / l.progressive)
                    d.warmup = d.warmup.map { min($0, d.steps) }
                    try distill(d, stage: st.index, substep: k, resume: skipCompress, label: "\(label) step \(k + 1)/\(l.progressive)")
                }
            }
            schedule = [:]
        case .kronecker(let k) where k.progressive > 1:
            // The budget falls from 1 to k.budget in equal steps; each step re-factorises the
            // layers (in the shape the first step chose) and distils for its share of the steps.
            for step in pos.substep..<k.progressive {
                let skipCompress = resume && step == pos.substep && pos.distilling
                let budget = 1 - (1 - k.budget) * Double(step + 1) / Double(k.progressive)
                if !skipCompress {
                    Console.status("\(label): progressive step \(step + 1)/\(k.progressive), budget \(String(format: "%.3f", budget))")
                    reports += try timed { try compressor.kronecker(k, stage: st.index, budget: budget) }
                }
                if var d = st.distill.map(scaled) {
                    d.steps = max(1, d.steps / k.progressive)
                    d.warmup = d.warmup.map { min($0, d.steps) }
                    try distill(d, stage: st.index, substep: step, resume: skipCompress, label: "\(label) step \(step + 1)/\(k.progressive)")
                }
            }
        default:
            if !(resume && pos.distilling), st.method.name != "distill" {
                Console.status("\(label): compressing")
                switch st.method {
                case .prune(let p): reports += try timed { try compressor.prune(p, stage: st.index) }
                case .kronecker(let k): reports += try timed { try compressor.kronecker(k, stage: st.index) }
                case .lowrank(let l): reports += try timed { try compressor.lowrank(l, stage: st.index) }
                case .distillOnly: break
                }
            }
            if let d = st.distill.map(scaled) { try distill(d, stage: st.index, substep: 0, resume: resume && pos.distilling, label: label) }
        }
    }

    /// Prune OFA: magnitude masks grow on the cubic schedule every `frequency` steps until
    /// fraction `end` of the steps, then stay fixed while distillation continues.
    /// Runs one compression call, adding its wall time to `compressionSeconds`.
    private func timed<T>(_ body: () throws -> T) rethrows -> T {
        let t0 = Runtime.wtime()
        defer { compressionSeconds += Runtime.wtime() - t0 }
        return try body()
    }

    func runGradualPrune(_ st: Recipe.Stage, _ p: Recipe.PruneSpec, resume: Bool, label: String) throws {
        let d = scaled(st.distill!)
        let names = try compressor.resolve(p.targets, at: "stages[\(st.index)].prune")
        // The final sparsity lands on a step that runs (the last one at the latest).
        let pruneSteps = max(0, min(d.steps - 1, Int((p.end * Double(d.steps)).rounded())))
        // --distill-scale compresses the whole schedule: the pruning interval scales with the steps.
        let frequency = max(1, Int((Double(p.frequency) * distillScale).rounded()))
        let before = names.map { compressor.storedParameters($0) }
        let dense = names.map { compressor.denseWeight($0) }
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
            reports.append(LayerReport(stage: st.index, layer: n, method: "magnitude \(Int((p.sparsity * 100).rounded()))% cubic\(p.scope == .global ? " global" : "") + KD",
                                       paramsBefore: before[k], paramsAfter: compressor.storedParameters(n),
                                       relativeError: compressor.relativeError(dense[k], compressor.denseWeight(n))))
        }
    }

    /// A stage's distillation settings with `distillScale` applied.
    func scaled(_ given: DistillSettings) -> DistillSettings { given.scaled(by: distillScale) }

    /// Distils the student with the (already scaled) settings of a stage.
    func distill(_ settings: DistillSettings, stage: Int, substep: Int, resume: Bool, label: String, hook: ((Int) throws -> Void)? = nil) throws {
        guard let train else { throw CompressionError.recipe("stages[\(stage)].distill needs training text: pass --data") }
        let trainer = try Trainer(student: student, teacher: teacher, settings: settings, train: train, valid: valid, comm: comm,
                                  overlap: overlapAllreduce, shardOptimizer: shardOptimizer)
        trainer.jsonLines = jsonLines
        trainer.label = label
        trainer.interruptRequested = interruptRequested
        trainer.printProfile = printProfile
        trainer.checkpoint = checkpoint
        trainer.checkpointExtra = extraState(Position(stage: stage, substep: substep, distilling: true))
        if let hook { trainer.beforeStep.append(hook) }
        var start = 0
        if resume, let cp = checkpoint { start = try trainer.resume(from: cp) }
        if let limit = stopAfterDistillSteps, distillStepsDone + settings.steps - start > limit {
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
