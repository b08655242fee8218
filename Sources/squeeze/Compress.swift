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
    @Option(help: "Factorize matrices with at least this many elements with ScaLAPACK when there are several ranks (default: a measured planner picks TSQR, ScaLAPACK or LAPACK).") var scalapackMin: Int?
    @Option(help: "Multiply every stage's distillation steps by this (e.g. 0.1 for a quick run).") var distillScale = 1.0
    @Flag(help: "Print the memory each stage needs (per rank and per node) and the factorization plan (which rank does which layer, by which path, estimated seconds, makespan against the ideal), then exit.") var dryRun = false
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
        o.resume = loop.resume
        o.sharedFS = !loop.noSharedFs
        o.tokenCache = tokenCacheDirectory()
        o.run = loop.runOptions
        o.run.distillScale = distillScale
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
            let factorization = try job.factorizationPlan()
            if loop.json {
                struct Stage: Encodable { let stage: String; let per_rank_bytes: Int; let per_node_bytes: Int; let available_bytes: Int?; let fits: Bool }
                struct DryRun: Encodable { let memory: [Stage]; let factorization: FactorizationPlan }
                Console.print(try jsonLine(DryRun(memory: plan.map { Stage(stage: $0.stage, per_rank_bytes: $0.estimate.perRank, per_node_bytes: $0.estimate.perNode,
                                                                            available_bytes: $0.estimate.available, fits: $0.estimate.fits) },
                                                  factorization: factorization)))
            } else {
                for (stage, e) in plan { Console.print("\(stage): \(e.describe())\n") }
                Console.print(factorization.describe())
            }
            if let big = plan.first(where: { !$0.estimate.fits }) { throw CLIError("\(big.stage) would not fit in 90% of a node's available memory (see above)") }
            return
        }
        SignalFlag.install()
        let summary = try job.run()
        if loop.json { Console.print(try jsonLine(summary)); return }
        Console.print(table(["layer", "method", "params before", "after", "bytes before", "after", "rel. error"], summary.layers.map {
            [$0.layer, $0.method, "\($0.paramsBefore)", "\($0.paramsAfter)", "\($0.bytesBefore)", "\($0.bytesAfter)", fmt($0.relativeError, 4)]
        }))
        Console.print("")
        Console.print("parameters \(summary.paramsBefore) -> \(summary.paramsAfter) stored, non-zero \(summary.nonzeroBefore) -> \(summary.nonzeroAfter) (\(fmt(Double(summary.nonzeroAfter) / Double(summary.nonzeroBefore) * 100, 1))%)")
        let (a, b) = (summary.sizeBefore, summary.sizeAfter)
        Console.print("weights as saved \(a.bytes) -> \(b.bytes) bytes (\(fmt(a.bitsPerWeight, 2)) -> \(fmt(b.bitsPerWeight, 2)) bits per weight); "
                      + "block linears \(a.blockLinearBytes) -> \(b.blockLinearBytes) bytes (\(fmt(a.blockLinearBitsPerWeight, 2)) -> \(fmt(b.blockLinearBitsPerWeight, 2)) bits per weight)")
        for (i, p) in summary.stagePerplexity.enumerated() { Console.print("stage \(i + 1) validation perplexity \(fmt(p, 3))") }
        Console.print("wrote \(o.out.path) (\(summary.bytes) bytes of weights) in \(formatDuration(summary.seconds))")
    } }
}
