import Reporting
import ArgumentParser
import Compression
import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// `squeeze compress`: run a recipe (prune / Kronecker / low rank, distillation between) on a model.
struct Compress: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compress a model with a recipe (YAML) and distil it back; writes a compressed model directory.")
    @Option(help: "Input model directory (also the teacher unless --teacher).") var model: String
    @Option(help: "Recipe file (YAML).") var recipe: String
    @Option(help: "Output model directory (checkpoints in OUT/checkpoint).") var out: String
    @Option(help: "Text for distillation and calibration (UTF-8 file or directory of .txt).") var data: String?
    @Option(help: "Teacher model directory (default: the input model).") var teacher: String?
    @Option(help: "Save weights as f32, f16 or bf16 (default: as the input).") var dtype: String?
    @Option(help: "Factorise matrices with at least this many elements with ScaLAPACK when there are several ranks (default: a measured planner picks TSQR, ScaLAPACK or LAPACK).") var scalapackMin: Int?
    @Option(help: "Multiply every stage's distillation steps by this (e.g. 0.1 for a quick run).") var distillScale = 1.0
    @Flag(help: "Print the memory each stage needs (per rank and per node) and the factorisation plan (which rank does which layer, by which path, estimated seconds, makespan against the ideal), then exit.") var dryRun = false
    @Option(help: "With --dry-run: plan for a job of this many ranks (a cluster job) instead of this one.") var planRanks: Int?
    @Option(help: "With --dry-run --plan-ranks: ranks per node (default: as this job).") var planRanksPerNode: Int?
    @Option(help: "With --dry-run: GiB available per node (default: this node's MemAvailable).") var planNodeMemory: Double?
    @OptionGroup var loop: LoopOptions

    func run() throws { try guarded {
        let world = try startMPI(quiet: loop.json)
        var o = CompressionJob.Options(model: fileURL(model), recipe: fileURL(recipe), out: fileURL(out))
        o.data = data.map(fileURL)
        o.valid = loop.valid.map(fileURL)
        o.validFraction = loop.validFraction
        o.teacher = teacher.map(fileURL)
        o.dtype = try dtype.map(weightDType)
        o.scalapackMinElements = scalapackMin
        o.distillScale = distillScale
        o.resume = loop.resume
        o.sharedFS = !loop.noSharedFs
        o.tokenCache = tokenCacheDirectory()
        o.overlap = !loop.noOverlap
        o.shardOptimizer = !loop.noShardOptimizer
        o.jsonLines = loop.json
        o.printProfile = loop.profile
        o.recompute = loop.recompute
        guard dryRun || (planRanks == nil && planRanksPerNode == nil && planNodeMemory == nil) else {
            throw ValidationError("--plan-ranks, --plan-ranks-per-node and --plan-node-memory need --dry-run")
        }
        o.planNodeMemory = try planNodeMemory.map { g in
            guard g > 0 else { throw ValidationError("--plan-node-memory must be > 0 GiB") }
            return Int(g * 1024 * 1024 * 1024)
        }
        o.planRanks = planRanks
        o.planRanksPerNode = planRanksPerNode
        let job = try CompressionJob(options: o, comm: world)
        if dryRun {
            let plan = try job.memoryPlan(refuse: false)
            let factorisation = try job.factorisationPlan()
            if loop.json {
                struct Stage: Encodable { let stage: String; let per_rank_bytes: Int; let per_node_bytes: Int; let available_bytes: Int?; let fits: Bool }
                struct DryRun: Encodable { let memory: [Stage]; let factorisation: FactorisationPlan }
                Console.print(try jsonLine(DryRun(memory: plan.map { Stage(stage: $0.stage, per_rank_bytes: $0.estimate.perRank, per_node_bytes: $0.estimate.perNode,
                                                                            available_bytes: $0.estimate.available, fits: $0.estimate.fits) },
                                                  factorisation: factorisation)))
            } else {
                for (stage, e) in plan { Console.print("\(stage): \(e.describe())\n") }
                Console.print(factorisation.describe())
            }
            if let big = plan.first(where: { !$0.estimate.fits }) { throw CLIError("\(big.stage) would not fit in 90% of a node's available memory (see above)") }
            return
        }
        job.interruptRequested = SignalFlag.consume
        SignalFlag.install()
        let summary = try job.run()
        if loop.json { Console.print(try jsonLine(summary)); return }
        Console.print(table(["layer", "method", "params before", "after", "rel. error"], summary.layers.map {
            [$0.layer, $0.method, "\($0.paramsBefore)", "\($0.paramsAfter)", fmt($0.relativeError, 4)]
        }))
        Console.print("")
        Console.print("parameters \(summary.paramsBefore) -> \(summary.paramsAfter) stored, non-zero \(summary.nonzeroBefore) -> \(summary.nonzeroAfter) (\(fmt(Double(summary.nonzeroAfter) / Double(summary.nonzeroBefore) * 100, 1))%)")
        for (i, p) in summary.stagePerplexity.enumerated() { Console.print("stage \(i + 1) validation perplexity \(fmt(p, 3))") }
        Console.print("wrote \(o.out.path) (\(summary.bytes) bytes of weights) in \(formatDuration(summary.seconds))")
    } }
}

/// `squeeze analyze`: stable rank and friends per layer.
struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Per-layer norms, stable rank, effective rank and the Arora et al. bound proxy; optional SVG plot.")
    @Option(help: "Model directory.") var model: String
    @Option(help: "A second model to compare with (e.g. the uncompressed one).") var compare: String?
    @Option(help: "Write an SVG plot of stable rank per layer.") var plot: String?
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Analyze models whose weights hold NaN or infinite values (refused by default).") var allowNonFinite = false

    func run() throws { try guarded {
        _ = try startMPI(quiet: json)
        let a = try ModelAnalysis.of(try GPT2.load(directory: fileURL(model), allowNonFinite: allowNonFinite))
        let b = try compare.map { try ModelAnalysis.of(try GPT2.load(directory: fileURL($0), allowNonFinite: allowNonFinite)) }
        if let plot, Console.rank == 0 {
            try a.plot(compare: b, title: "stable rank per layer", labels: (compare.map { URL(fileURLWithPath: $0).lastPathComponent } ?? "", URL(fileURLWithPath: model).lastPathComponent))
                .write(to: fileURL(plot))
        }
        if json {
            struct Out: Encodable { let model: ModelAnalysis; let compare: ModelAnalysis? }
            Console.print(try jsonLine(Out(model: a, compare: b)))
            return
        }
        func rows(_ m: ModelAnalysis) -> [[String]] {
            m.layers.map { l in [l.name, l.form, l.shape.map(String.init).joined(separator: "x"), "\(l.params)", "\(l.nonzero)", fmt(l.fro, 3), fmt(l.spectral, 3),
                                 fmt(l.stableRank, 2), fmt(l.stableRankUnsquared, 3), "\(l.effectiveRank90)", "\(l.effectiveRank99)"] }
        }
        let header = ["layer", "form", "shape", "params", "non-zero", "‖W‖F", "‖W‖2", "srank", "‖W‖F/‖W‖2", "r90", "r99"]
        func totals(_ m: ModelAnalysis) -> String {
            "total params \(m.totalParams), non-zero \(m.totalNonzero); Σ srank (block linears) \(fmt(m.sumStableRank, 2)); bound proxy Π‖W‖2²·Σsrank = \(String(format: "%.4g", m.boundProxy)) (log10 \(fmt(m.log10BoundProxy, 3)))"
        }
        Console.print(table(header, rows(a)))
        Console.print(totals(a))
        if let b {
            Console.print("\ncompared with \(compare!):")
            Console.print(table(header, rows(b)))
            Console.print(totals(b))
            Console.print("\nchange: Σ srank \(fmt(b.sumStableRank, 2)) -> \(fmt(a.sumStableRank, 2)); log10 bound proxy \(fmt(b.log10BoundProxy, 3)) -> \(fmt(a.log10BoundProxy, 3))")
        }
        if let plot { Console.print("plot written to \(plot)") }
    } }
}

/// `squeeze export --dense`: a plain GPT-2 directory that transformers loads.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a compressed model back as a plain Hugging Face GPT-2 directory.")
    @Option(help: "Compressed model directory.") var model: String
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Materialise every layer as a dense matrix (required: the only export form).") var dense = false
    @Option(help: "f32, f16 or bf16 (default: as the input).") var dtype: String?

    func run() throws { try guarded {
        _ = try startMPI()
        guard dense else { throw ValidationError("export needs --dense (the plain GPT-2 layout has dense weights only)") }
        let m = try GPT2.load(directory: fileURL(model))
        let d = try m.densified()
        let dt = try dtype.map(weightDType) ?? m.storageDType
        if Console.rank == 0 { try d.save(to: fileURL(out), dtype: dt, tokenizerFrom: fileURL(model)) }
        Console.print("wrote a dense GPT-2 directory to \(out)")
    } }
}
