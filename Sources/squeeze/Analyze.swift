import Reporting
import ArgumentParser
import Compression
import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

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
            m.layers.map { l in [l.name, l.form, l.shape.map(String.init).joined(separator: "x"), "\(l.params)", "\(l.nonzero)", "\(l.bytes)", fmt(l.fro, 3), fmt(l.spectral, 3),
                                 fmt(l.stableRank, 2), fmt(l.stableRankUnsquared, 3), "\(l.effectiveRank90)", "\(l.effectiveRank99)"] }
        }
        let header = ["layer", "form", "shape", "params", "non-zero", "bytes", "‖W‖F", "‖W‖2", "srank", "‖W‖F/‖W‖2", "r90", "r99"]
        func totals(_ m: ModelAnalysis) -> String {
            "total params \(m.totalParams), non-zero \(m.totalNonzero), \(m.size.bytes) bytes as saved (\(fmt(m.size.bitsPerWeight, 2)) bits per weight; block linears \(fmt(m.size.blockLinearBitsPerWeight, 2))); Σ srank (block linears) \(fmt(m.sumStableRank, 2)); bound proxy Π‖W‖2²·Σsrank = \(String(format: "%.4g", m.boundProxy)) (log10 \(fmt(m.log10BoundProxy, 3)))"
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
