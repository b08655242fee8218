import Reporting
import ArgumentParser
import Benchmarks
import Distributed
import Foundation
import MPI

/// `squeeze bench ...`: performance figures as ratios measured in one run.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Performance benchmarks (ratios against sgemm peak, bare LAPACK/MPI calls, np=1).",
        subcommands: [BenchBLAS.self, BenchAllreduce.self, BenchModel.self, BenchTrain.self, BenchFactor.self, BenchTall.self, BenchForms.self, BenchBF16.self])
}

/// Shared `--json` flag and MPI/BLAS setup for every benchmark.
struct BenchOptions: ParsableArguments {
    @Flag(help: "Print one JSON object instead of a table.") var json = false

    /// Initializes MPI, sets BLAS threads, silences progress under --json.
    func setUp() throws -> Communicator { try startMPI(quiet: json) }
}

/// `squeeze bench blas`: sgemm peak and our BLAS/LAPACK wrappers against the bare calls.
struct BenchBLAS: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "blas", abstract: "sgemm GFLOP/s at 2048^3; our matmul and SVD wrappers vs the bare calls.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Matrix size for sgemm.") var size = 2048

    func run() throws { try guarded {
        _ = try options.setUp()
        let r = try runBLASBench(size: size)
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("""
        BLAS threads               \(r.threads)
        sgemm \(r.sgemmSize)^3               \(fmt(r.sgemmGflops, 1)) GFLOP/s
        matmul wrapper / bare      \(fmt(r.matmulRatio, 3))x  (\(fmt(r.matmulWrapperSeconds * 1e3, 1)) ms vs \(fmt(r.matmulBareSeconds * 1e3, 1)) ms)
        svd \(r.svdShape[0])x\(r.svdShape[1]) wrapper / bare  \(fmt(r.svdRatio, 3))x  (\(fmt(r.svdWrapperSeconds * 1e3, 1)) ms vs \(fmt(r.svdBareSeconds * 1e3, 1)) ms)
        """)
    } }
}

/// `squeeze bench allreduce`: all-reduce correctness, bus bandwidth, wrapper vs bare MPI_Allreduce.
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce", abstract: "Checks an all-reduce sum; bus bandwidth and our wrapper vs a bare MPI_Allreduce.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Message size in bytes.") var bytes = 64 << 20

    func run() throws { try guarded {
        let world = try options.setUp()
        guard bytes > 0 else { throw ValidationError("--bytes must be positive, got \(bytes)") }
        let r = try runAllreduceBench(comm: world, bytes: bytes)
        guard r.correct else { throw BenchError.wrongResult("all-reduce sum is wrong on at least one rank") }
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("""
        ranks                      \(r.ranks)
        bytes                      \(r.bytes)
        sum                        correct
        bus bandwidth              \(fmt(r.busBandwidthGBs, 2)) GB/s
        wrapper / bare             \(fmt(r.ratio, 3))x  (\(fmt(r.wrapperSeconds * 1e3, 2)) ms vs \(fmt(r.bareSeconds * 1e3, 2)) ms)
        """)
    } }
}

/// A benchmark's own correctness check failed.
enum BenchError: Error, CustomStringConvertible {
    case wrongResult(String)
    var description: String {
        switch self { case let .wrongResult(s): return "benchmark result check failed: \(s)" }
    }
}

/// `squeeze bench model`: distilgpt2-shaped forward and forward+backward against the sgemm peak.
struct BenchModel: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "model", abstract: "distilgpt2-shaped model, B=4 T=256: forward and forward+backward tokens/s and % of sgemm peak.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Batch size.") var batch = 4
    @Option(help: "Sequence length.") var seq = 256

    func run() throws { try guarded {
        _ = try options.setUp()
        let r = try runModelBench(B: batch, T: seq)
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("""
        model                      distilgpt2-shaped (6 x 768, 12 heads, vocab 50257), B=\(r.B) T=\(r.T), \(r.threads) BLAS threads
        sgemm peak (same run)      \(fmt(r.sgemmPeakGflops, 1)) GFLOP/s
        forward                    \(fmt(r.forwardTokensPerSecond, 0)) tokens/s  = \(fmt(r.forwardPercentOfPeak, 1))% of peak
        forward+backward           \(fmt(r.trainTokensPerSecond, 0)) tokens/s  = \(fmt(r.trainPercentOfPeak, 1))% of peak
        (\(r.flopConvention))
        """)
    } }
}

/// `squeeze bench forms`: every packed weight form on GPT-2's layer shapes.
struct BenchForms: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "forms",
        abstract: "Each packed weight form on gpt2's layer shapes: decode (1 row) and prefill times against dense F32, its bytes bound and its FLOP bound.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Rows of the prefill product.") var rows = 1024
    @Option(help: "Shapes [in, out], comma separated (default: gpt2's 768x2304, 768x768, 768x3072, 3072x768 and the 768x50257 head).")
    var shapes = "768x2304,768x768,768x3072,3072x768,768x50257"

    func run() throws { try guarded {
        _ = try options.setUp()
        let parsed = try parseShapes(shapes, "INxOUT")
        let r = try runFormsBench(shapes: parsed, prefillRows: rows)
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("read bandwidth \(fmt(r.readGBps, 1)) GB/s, sgemm \(fmt(r.sgemmGflops, 0)) GFLOP/s (same run), \(r.threads) thread(s), prefill \(r.prefillRows) rows")
        Console.print(table(["shape", "form", "MB", "decode us", "x dense", "of bytes bound", "prefill ms", "x dense", "of FLOP bound"], r.rows.map {
            ["\($0.shape[0])x\($0.shape[1])", $0.form, fmt(Double($0.bytes) / 1e6, 2), fmt($0.decodeSeconds * 1e6, 0), fmt($0.decodeSpeedup, 2),
             fmt($0.decodeOfBytesBound, 2), fmt($0.prefillSeconds * 1e3, 2), fmt($0.prefillSpeedup, 2), fmt($0.prefillOfFlopBound, 2)]
        }))
    } }
}

/// `squeeze bench bf16`: BF16Matmul (oneDNN) against OpenBLAS sgemm on gpt2's prefill shapes.
struct BenchBF16: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bf16",
        abstract: "BF16Matmul (oneDNN's BF16 kernels, or its fallback) vs OpenBLAS sgemm on gpt2's shapes: GFLOP/s, best-of ratios over alternating rounds.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Rows of activations.") var rows = 1024
    @Option(help: "Weight shapes NxK (outputs x inputs), comma separated (default: gpt2's 2304x768, 768x768, 3072x768, 768x3072).")
    var shapes = "2304x768,768x768,3072x768,768x3072"
    @Option(help: "Alternating rounds; each figure is the best of them.") var rounds = 8

    func run() throws { try guarded {
        _ = try options.setUp()
        let parsed = try parseShapes(shapes, "NxK")
        guard rows > 0, rounds > 0 else { throw ValidationError("--rows and --rounds must be positive") }
        let r = runBF16Bench(m: rows, shapes: parsed, rounds: rounds)
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("BF16Matmul: \(r.available ? "oneDNN" : "fallback (widened BF16 + sgemm)"), CPU AVX-512 BF16 \(r.cpuHasAVX512BF16 ? "yes" : "no"), "
                      + "\(r.threads) thread(s), best of \(r.rounds) alternating rounds; y [m, n] = x [m, k] · Wᵀ")
        Console.print("(the last two columns: median time of a call right after the other library's over one right after itself)")
        Console.print(table(["m x n x k", "implementation", "create ms", "first call ms", "BF16 GFLOP/s", "sgemm GFLOP/s", "BF16 / sgemm",
                             "fallback GFLOP/s", "BF16 1-thread GFLOP/s", "thread scaling", "sgemm after BF16", "BF16 after sgemm"], r.rows.map {
            ["\($0.m)x\($0.n)x\($0.k)", $0.implementation, fmt($0.createSeconds * 1e3, 2), fmt($0.firstCallSeconds * 1e3, 2), fmt($0.bf16Gflops, 1), fmt($0.sgemmGflops, 1),
             fmt($0.speedup, 2) + "x", fmt($0.fallbackGflops, 1), fmt($0.bf16OneThreadGflops, 1), fmt($0.threadScaling, 2) + "x",
             fmt($0.sgemmAfterOneDNN, 2) + "x", fmt($0.bf16AfterOpenBLAS, 2) + "x"]
        }))
    } }
}

/// `squeeze bench train`: the KD step over all ranks, overlap on/off, all-reduce vs bare.
struct BenchTrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train", abstract: "distilgpt2-shaped KD step over all ranks: tokens/s, % of sgemm peak, all-reduce vs bare MPI_Allreduce.")
    @OptionGroup var options: BenchOptions
    @Option(help: "Global batch.") var batch = 4
    @Option(help: "Sequence length.") var seq = 256
    @Option(help: "KD steps per measurement (the first is warm-up).") var steps = 4

    func run() throws { try guarded {
        let world = try options.setUp()
        let r = try runTrainBench(comm: world, B: batch, T: seq, steps: steps)
        if options.json { Console.print(try jsonLine(r)); return }
        Console.print("""
        KD step (teacher fwd + student fwd/bwd + AdamW), distilgpt2-shaped, B=\(r.B) T=\(r.T), \(r.ranks) rank(s) x \(r.threadsPerRank) BLAS thread(s)
        sgemm peak, all ranks (same run)  \(fmt(r.sgemmPeakGflops, 1)) GFLOP/s
        tokens/s                          \(fmt(r.tokensPerS, 1))  = \(fmt(r.percentOfPeak, 1))% of peak
        tokens/s without overlap          \(fmt(r.tokensPerSNoOverlap, 1))
        tokens/s without sharded AdamW    \(fmt(r.tokensPerSUnsharded, 1))  (ZeRO-1 on / off: \(fmt(r.tokensPerS / r.tokensPerSUnsharded, 3))x)
        bytes per step and rank           \(r.bytesPerStep) (reduce-scatter + all-gather = all-reduce)
        gradient all-reduce               \(fmt(r.allreduceSeconds * 1e3, 2)) ms for \(r.gradientBytes) bytes; bare MPI_Allreduce \(fmt(r.bareAllreduceSeconds * 1e3, 2)) ms; ratio \(fmt(r.allreduceRatio, 3))x
        """)
    } }
}

/// `squeeze bench factor`: factorizations against bare sgesdd; randomized vs full SVD.
struct BenchFactor: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "factor", abstract: "Low rank and Kronecker on distilgpt2-shaped matrices vs bare LAPACK sgesdd; randomized vs full SVD.")
    @OptionGroup var options: BenchOptions
    @Flag(help: "Skip the 50257x768 embedding (slow).") var noEmbedding = false

    func run() throws { try guarded {
        _ = try options.setUp()
        let rows = try runFactorBench(includeEmbedding: !noEmbedding)
        if options.json { Console.print(try jsonLine(rows)); return }
        Console.print(table(["method", "shape", "ours (s)", "bare sgesdd (s)", "ratio", "k", "randomized (s)", "speed-up", "extra error"], rows.map {
            [$0.method, "\($0.shape[0])x\($0.shape[1])", fmt($0.seconds, 3), fmt($0.bareSeconds, 3), fmt($0.ratioToLAPACK, 3) + "x",
             "\($0.k)", fmt($0.randomizedSeconds, 4), fmt($0.speedup, 1) + "x", fmt($0.extraErrorPercent, 3) + "%"]
        }))
    } }
}

/// `squeeze bench tall`: distributed SVDs (TSQR `tallSVD`, ScaLAPACK) against LAPACK on rank 0.
struct BenchTall: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tall",
        abstract: "TSQR tallSVD and ScaLAPACK psgesvd on all ranks vs LAPACK sgesdd (LQ and QR paths) on rank 0 (power-law matrices).",
        discussion: """
        Run under mpirun, e.g. `mpirun -np 2 -x OPENBLAS_NUM_THREADS=1 squeeze bench tall`: LAPACK runs on \
        rank 0 with the BLAS threads of all ranks on its node (the other ranks sleep), TSQR and ScaLAPACK on \
        all ranks. Each figure is the best of --repeats runs.
        """)
    @OptionGroup var options: BenchOptions
    @Option(help: "Comma-separated ROWSxCOLS shapes.") var shapes = "50257x768"
    @Option(help: "Truncation rank k as a fraction of min(rows, cols).") var rankRatio = 0.25
    @Option(help: "Runs per method; the best is kept.") var repeats = 2
    @Option(help: "Runs of ScaLAPACK (default: --repeats); one can take minutes.") var scalapackRepeats: Int?
    @Option(help: "BLAS threads for LAPACK on rank 0 (default: the BLAS threads of all ranks on its node).")
    var lapackThreads: Int?
    @Flag(help: "Skip TSQR.") var noTsqr = false
    @Flag(help: "Skip ScaLAPACK.") var noScalapack = false

    func run() throws { try guarded {
        let world = try options.setUp()
        var o = TallBenchOptions()
        o.shapes = try shapes.split(separator: ",").map { text in
            let parts = text.lowercased().split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard parts.count == 2, parts.allSatisfy({ $0 >= 1 }) else {
                throw ValidationError("--shapes takes ROWSxCOLS[,ROWSxCOLS...], got '\(text)'")
            }
            return parts
        }
        guard rankRatio > 0, rankRatio <= 1 else { throw ValidationError("--rank-ratio must be in (0, 1], got \(rankRatio)") }
        guard repeats >= 1 else { throw ValidationError("--repeats must be >= 1, got \(repeats)") }
        if let r = scalapackRepeats, r < 1 { throw ValidationError("--scalapack-repeats must be >= 1, got \(r)") }
        if let t = lapackThreads, t < 1 { throw ValidationError("--lapack-threads must be >= 1, got \(t)") }
        o.rankRatio = rankRatio
        o.repeats = repeats
        o.scalapackRepeats = scalapackRepeats
        o.lapackThreads = lapackThreads
        o.tsqr = !noTsqr
        o.scalapack = !noScalapack
        let rows = try runTallBench(comm: world, options: o)
        if options.json { Console.print(try jsonLine(rows)); return }
        let seconds = { (x: Double?) in x.map { fmt($0, 2) } ?? "-" }
        let ratio = { (x: Double?) in x.map { fmt($0, 2) + "x" } ?? "-" }
        let percent = { (x: Double?) in x.map { fmt($0, 4) + "%" } ?? "-" }
        Console.print(table(["shape", "k", "ranks x threads", "LAPACK (s)", "LAPACK QR path (s)", "TSQR (s)", "ScaLAPACK (s)",
                             "LAPACK/TSQR", "QR path/TSQR", "LAPACK/ScaLAPACK", "E-Y error", "TSQR vs E-Y", "TSQR vs LAPACK error",
                             "ScaLAPACK vs LAPACK error", "load"], rows.map {
            ["\($0.shape[0])x\($0.shape[1])", "\($0.k)", "\($0.ranks) x \($0.threadsPerRank) (LAPACK: 1 x \($0.lapackThreads))",
             seconds($0.lapackSeconds), seconds($0.lapackQRPathSeconds), seconds($0.tsqrSeconds), seconds($0.scalapackSeconds),
             ratio($0.lapackOverTSQR), ratio($0.lapackQRPathOverTSQR), ratio($0.lapackOverScaLAPACK), fmt($0.eckartYoungError, 4),
             percent($0.tsqrOverEckartYoungPercent), percent($0.tsqrErrorDifferencePercent), percent($0.scalapackErrorDifferencePercent),
             "\(fmt($0.loadBefore, 1))-\(fmt($0.loadAfter, 1))"]
        }))
        for r in rows {
            guard let p = r.tsqrProfile else { continue }
            Console.print("TSQR phases on rank 0, \(r.shape[0])x\(r.shape[1]): local QR \(fmt(p.localQR, 2)) s, gather R \(fmt(p.gatherR, 2)) s, "
                          + "small SVD \(fmt(p.smallSVD, 2)) s, apply Q \(fmt(p.applyQ, 2)) s, gather U \(fmt(p.gatherU, 2)) s")
        }
    } }
}

/// `--shapes` of the benchmarks: comma-separated `AxB` pairs of positive sizes (`form` names them
/// in the error, e.g. "INxOUT").
func parseShapes(_ text: String, _ form: String) throws -> [[Int]] {
    try text.split(separator: ",").map { s -> [Int] in
        let d = s.lowercased().split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard d.count == 2, d.allSatisfy({ $0 > 0 }) else { throw ValidationError("--shapes takes \(form) pairs, got '\(s)'") }
        return d
    }
}
