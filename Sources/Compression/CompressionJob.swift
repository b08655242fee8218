import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// `squeeze compress` as a library type: loads the student (the input model, or the checkpoint
/// on resume), the teacher (once per node) and the data, checks that every rank holds the same
/// inputs, runs the recipe, writes the compressed model and removes the checkpoint.
public final class CompressionJob {
    /// What to compress and how.
    public struct Options {
        public var model: URL
        public var recipe: URL
        public var out: URL
        public var data: URL?
        public var valid: URL?
        public var validFraction = 0.02
        /// Teacher directory (nil: the input model).
        public var teacher: URL?
        /// Weights type of the output (nil: as the input).
        public var dtype: SafeTensorsDType?
        /// Force ScaLAPACK for matrices of at least this many elements (nil: the planner decides).
        public var scalapackMinElements: Int?
        public var resume = false
        public var sharedFS = true
        /// Where token files are cached (the executable passes `TokenDataset.cacheDirectory(environment:)`).
        public var tokenCache = TokenDataset.cacheDirectory(environment: [:])
        /// How the job runs, passed on to every stage's trainer.
        public var run = RunOptions()
        /// `--dry-run` for a job of this many ranks (and ranks per node) instead of this one's.
        public var planRanks: Int?
        public var planRanksPerNode: Int?
        /// `--dry-run` for nodes with this many bytes available instead of this one's MemAvailable.
        public var planNodeMemory: Int?

        public init(model: URL, recipe: URL, out: URL) {
            self.model = model
            self.recipe = recipe
            self.out = out
        }
    }

    /// What a run did: per-layer reports, parameter counts and the output's size.
    public struct Summary: Codable, Sendable {
        public let layers: [LayerReport]
        public let paramsBefore: Int, paramsAfter: Int, nonzeroBefore: Int, nonzeroAfter: Int, bytes: Int
        /// What the weights take as saved, before and after (values, masks, codes, scales, factors).
        public let sizeBefore: StoredSize, sizeAfter: StoredSize
        public let stagePerplexity: [Double]
        public let seconds: Double
        /// Bytes this rank moved through collectives over the whole job (`Communicator.trafficBytes`).
        public let bytesCommunicated: Int
        /// Seconds in the compression methods alone (no loading, distillation or writing).
        public let compressionSeconds: Double
        /// This rank's peak resident memory over the whole job (VmHWM), when the system reports it.
        public let peakResidentBytes: Int?
        enum CodingKeys: String, CodingKey {
            case layers, paramsBefore = "params_before", paramsAfter = "params_after", nonzeroBefore = "nonzero_before"
            case nonzeroAfter = "nonzero_after", bytes, stagePerplexity = "stage_perplexity", seconds
            case sizeBefore = "size_before", sizeAfter = "size_after"
            case bytesCommunicated = "bytes_communicated", compressionSeconds = "compression_seconds", peakResidentBytes = "peak_rss_bytes"
        }
    }

    public let options: Options
    public let comm: Communicator

    public init(options: Options, comm: Communicator) throws {
        guard options.out.standardizedFileURL != options.model.standardizedFileURL else {
            throw CompressionError.recipe("the output directory must differ from the input model")
        }
        guard options.run.distillScale > 0 else { throw CompressionError.recipe("the distillation scale must be > 0, got \(options.run.distillScale)") }
        self.options = options
        self.comm = comm
    }

    /// The checkpoint of this output directory.
    public var checkpoint: Checkpoint { Checkpoint(directory: options.out.appendingPathComponent("checkpoint")) }

    /// The ranks (and ranks per node) the plans are for: this job's, or `planRanks`'s.
    func planShape() throws -> (ranks: Int, perNode: Int) {
        let local = comm.size > 1 ? try comm.splitShared().size : 1
        guard let n = options.planRanks else { return (comm.size, local) }
        guard n >= 1, (options.planRanksPerNode ?? 1) >= 1 else { throw CompressionError.recipe("--plan-ranks and --plan-ranks-per-node must be >= 1") }
        return (n, min(n, options.planRanksPerNode ?? local))
    }

    /// The memory each stage will need, from the config and weights headers alone (nothing big
    /// is loaded): one estimate for the compression of the input model, one per distillation.
    /// Throws, with the numbers and what would help, when a stage cannot fit on this node.
    /// With `refuse: false` (a dry run) a stage that does not fit is returned, not thrown.
    public func memoryPlan(refuse: Bool = true) throws -> [(stage: String, estimate: MemoryEstimate)] {
        let o = options
        let recipe = try Recipe.load(o.recipe)
        let student = try GPT2.forms(directory: o.model)
        let teacher = try GPT2.forms(directory: o.teacher ?? o.model)
        let config = student.config
        let (ranks, ranksPerNode) = try planShape()
        let tokens = o.data.map { textBytes($0) / 4 } ?? 0   // about 4 bytes of English per GPT-2 token
        var plan: [(String, MemoryEstimate)] = []
        // One-shot compression: the model, the dense copies of the layers being factorized, and
        // calibration Hessians (Double, in² per block linear).
        let available = o.planNodeMemory ?? MemoryEstimate.availableBytes()
        var oneShot = MemoryEstimate(ranksPerNode: ranksPerNode, available: available)
        oneShot.add("process (runtime, MPI, BLAS)", MemoryEstimate.processOverhead())
        oneShot.add("model weights", 4 * student.parameterFloats)
        oneShot.add("working copies of the layers being compressed", 4 * student.parameterFloats)
        if recipe.stages.contains(where: { $0.method.calibrated }) {
            oneShot.add("calibration Hessians and streams", 8 * (3 * config.nEmbd * config.nEmbd + config.nInner * config.nInner)
                        + 4 * recipe.calibration.samples * recipe.calibration.seq * config.nEmbd / max(ranks, 1)
                        + student.inferenceBytes(rows: recipe.calibration.seq))
        }
        plan.append(("one-shot compression", oneShot))
        // Each distillation with the forms the stages before it (and its own) leave, as far as
        // they are known before running (`plannedForms`, which also refuses, before anything
        // runs, forms a later stage cannot take).
        _ = try plannedForms(student, recipe: recipe, through: recipe.stages.count - 1)
        for st in recipe.stages {
            guard let d = st.distill?.scaled(by: o.run.distillScale) else { continue }
            var job = MemoryEstimate.DistillationJob(student: try plannedForms(student, recipe: recipe, through: st.index), teacher: teacher, settings: d)
            (job.ranks, job.ranksPerNode, job.shardOptimizer, job.recompute, job.tokens) = (ranks, ranksPerNode, o.run.shardOptimizer, o.run.recompute, tokens)
            let e: MemoryEstimate
            do { e = try MemoryEstimate.microBatch(job, available: available).estimate } catch where !refuse {
                e = MemoryEstimate.distillation(job, microBatch: d.microBatch ?? 1, available: available)
            }
            plan.append(("stage \(st.index + 1) distillation", e))
        }
        if refuse, let big = plan.first(where: { !$0.1.fits }) {
            throw CompressionError.recipe("\(big.0) does not fit in this node's memory:\n\(big.1.describe())\ntry more ranks or nodes, or --recompute")
        }
        return plan
    }

    /// Which rank factorizes which layer, by which path, with estimated seconds (from the config
    /// and the recipe; one LAPACK SVD timed on this rank calibrates the estimates).
    public func factorizationPlan() throws -> FactorizationPlan {
        let recipe = try Recipe.load(options.recipe)
        let config = try GPT2.forms(directory: options.model).config
        func plan(_ c: Double) throws -> FactorizationPlan {
            try FactorizationPlan.make(recipe: recipe, config: config, ranks: try planShape().ranks, scalapackMinElements: options.scalapackMinElements,
                                       secondsPerUnit: c)
        }
        let jobs = try plan(0)
        return jobs.jobs.isEmpty ? jobs : try plan(try FactorizationPlan.calibrate())   // time an SVD only when there is work
    }

    /// Runs the whole job (collective).
    public func run() throws -> Summary {
        let o = options
        _ = try memoryPlan()
        let recipe = try Recipe.load(o.recipe)
        let cp = checkpoint
        if o.resume && !cp.exists { throw CompressionError.recipe("resume: no checkpoint in \(cp.directory.path)") }
        // The input model's figures, taken before anything changes it (on resume it is only read
        // for them, then released).
        let (before, student): (InputFigures, GPT2) = try {
            let input = try GPT2.load(directory: o.model, comm: comm, sharedFS: o.sharedFS)
            let figures = InputFigures(input)
            if !o.resume { return (figures, input) }
            return (figures, try GPT2.load(directory: cp.modelDirectory, comm: comm, sharedFS: o.sharedFS))
        }()
        student.sourceDirectory = o.model
        let distills = recipe.stages.contains { $0.distill != nil }
        // The teacher never changes: one copy per node.
        let teacher = distills ? try GPT2.load(directory: o.teacher ?? o.model, comm: comm, sharedFS: o.sharedFS, readOnly: true) : nil
        let runner = RecipeRunner(recipe: recipe, student: student, teacher: teacher, comm: comm, options: o.run)
        runner.compressor.scalapackMinElements = o.scalapackMinElements
        runner.checkpoint = distills ? cp : nil
        if let data = o.data {
            let tok = try loadTokenizer(o.model, for: student.config, comm: comm, sharedFS: o.sharedFS)
            (runner.train, runner.valid) = try TokenDataset.trainAndValidation(data: data, valid: o.valid, validFraction: o.validFraction,
                                                                               tokenizer: tok, tokenizerDirectory: o.model, comm: comm,
                                                                               cacheDirectory: o.tokenCache, sharedFS: o.sharedFS)
        }
        // Every rank must start from the same files (no shared filesystem: a stale copy on a host).
        let recipeBytes = FileManager.default.contents(atPath: o.recipe.path) ?? Data()
        var inputs = [("model \(o.model.path)", before.hash), ("recipe \(o.recipe.path)", recipeBytes.withUnsafeBytes { hashContents($0) })]
        if o.resume { inputs.append(("checkpoint \(cp.directory.path)", student.contentHash)) }
        if let t = o.teacher, let m = teacher { inputs.append(("teacher \(t.path)", m.contentHash)) }
        if let d = o.data, let t = runner.train { inputs.append(("data \(d.path)", t.contentHash)) }
        if let v = runner.valid { inputs.append(("validation data \((o.valid ?? o.data)?.path ?? "")", v.contentHash)) }
        try verifySameInputs(inputs, comm: comm)

        let t0 = Date()
        try runner.run(resume: o.resume)
        var failure = ""
        var bytes = 0
        if comm.rank == 0 {
            do {
                try student.save(to: o.out, dtype: o.dtype ?? before.dtype, tokenizerFrom: o.model)
                if !runner.history.isEmpty {
                    try writeLossCurve(runner.history, to: o.out.appendingPathComponent("loss.svg"), title: "squeeze compress: \(recipe.name ?? o.recipe.lastPathComponent)")
                }
                bytes = weightBytes(o.out)
                runner.checkpoint?.remove()
            } catch { failure = "\(error)" }
        }
        if let f = try comm.firstFailure(failure.isEmpty ? nil : failure) { throw CompressionError.output(f.message(on: comm.rank, doing: "write \(o.out.path)")) }
        return Summary(layers: runner.reports, paramsBefore: before.params, paramsAfter: student.params.parameterCount,
                       nonzeroBefore: before.nonzero, nonzeroAfter: student.nonzeroCount, bytes: bytes,
                       sizeBefore: before.size, sizeAfter: student.storedSize(valueBytes: (o.dtype ?? before.dtype).size),
                       stagePerplexity: runner.stagePerplexity.sorted { $0.key < $1.key }.map { $0.value },
                       seconds: Date().timeIntervalSince(t0), bytesCommunicated: Communicator.trafficBytes,
                       compressionSeconds: runner.compressionSeconds, peakResidentBytes: MemoryEstimate.peakResidentBytes())
    }

    /// What the job needs to know of the input model.
    struct InputFigures {
        let params: Int, nonzero: Int, hash: UInt64, dtype: SafeTensorsDType, size: StoredSize
        init(_ m: GPT2) {
            params = m.params.parameterCount; nonzero = m.nonzeroCount; hash = m.contentHash; dtype = m.storageDType; size = m.storedSize()
        }
    }
}

/// Bytes of a text file, or of the .txt files of a directory.
func textBytes(_ url: URL) -> Int {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    guard fm.fileExists(atPath: url.path, isDirectory: &isDir) else { return 0 }
    let files = isDir.boolValue ? ((try? fm.contentsOfDirectory(atPath: url.path)) ?? []).filter { $0.hasSuffix(".txt") }.map { url.appendingPathComponent($0).path } : [url.path]
    return files.reduce(0) { $0 + ((try? fm.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
}

/// Bytes of a model directory's weights (one file or shards).
public func weightBytes(_ dir: URL) -> Int {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
    return names.filter { $0.hasSuffix(".safetensors") && $0.hasPrefix("model") }.reduce(0) {
        $0 + ((try? FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent($1).path)[.size] as? Int) ?? 0)
    }
}

extension GPT2 {
    /// Non-zero scalars of all parameters.
    public var nonzeroCount: Int {
        var n = 0
        for slot in params.slots {
            let p = params.values.baseAddress! + slot.offset
            for i in 0..<slot.count where p[i] != 0 { n += 1 }
        }
        return n
    }
}
