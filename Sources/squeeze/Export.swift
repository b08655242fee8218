import Reporting
import ArgumentParser
import Compression
import Distributed
import Foundation
import Model
import MPI
import Tensor
import Training

/// `squeeze export --dense`: a plain GPT-2 directory that transformers loads.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write a compressed model back as a plain Hugging Face GPT-2 directory.")
    @Option(help: "Compressed model directory.") var model: String
    @Option(help: "Output directory.") var out: String
    @Flag(help: "Materialize every layer as a dense matrix (required: the only export form).") var dense = false
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
