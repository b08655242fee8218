import Reporting
import ArgumentParser
import Foundation
import MPI

/// The `squeeze` command: compress GPT-2-family models and measure them, on one or many MPI ranks.
struct Squeeze: ParsableCommand {
    static let version = "0.1.0"
    static let configuration = CommandConfiguration(
        commandName: "squeeze",
        abstract: "Compress GPT-2-family models (pruning, Kronecker, low rank) with distillation, over MPI.",
        discussion: "Run under mpirun to use several ranks: mpirun -np 4 squeeze compress ...",
        version: version,
        subcommands: [Compress.self, Eval.self, Analyze.self, Export.self, Generate.self, Train.self, Init.self, Bench.self])
}

/// Entry point: picks OpenBLAS's AVX-512 kernels where it would not, then runs the command.
@main
enum Entry {
    static func main() {
        selectBLASKernels()
        Squeeze.main()
    }
}

/// OpenBLAS 0.3.21 (Debian 12) does not know AMD Zen 4 and falls back to its Haswell kernels,
/// half the sgemm speed on CPUs with AVX-512. The core type is chosen when the library loads, so
/// when the CPU has AVX-512 (F, BW, VL, DQ, CD) and the user has not set OPENBLAS_CORETYPE, set
/// it to SKYLAKEX and re-execute this program once. SQUEEZE_NO_REEXEC=1 disables this.
func selectBLASKernels() {
    // OpenBLAS writes its own choice into the environment when it loads, so look at the
    // environment this process was started with.
    let initial = (readProcFile("/proc/self/environ") ?? "").split(separator: "\0").map { $0.split(separator: "=", maxSplits: 1).first.map(String.init) ?? "" }
    guard !initial.contains("OPENBLAS_CORETYPE"), !initial.contains("SQUEEZE_NO_REEXEC"),
          let cpuinfo = readProcFile("/proc/cpuinfo"),
          let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    guard ["avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"].allSatisfy(flags.contains) else { return }
    // Execute the binary's real path, not /proc/self/exe: the kernel names a process after the
    // file it executes, and ps, top, pgrep and mpirun's messages should keep saying "squeeze".
    var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &path, path.count - 1)
    guard n > 0 else { return }
    setenv("OPENBLAS_CORETYPE", "SKYLAKEX", 1)
    execv(path, CommandLine.unsafeArgv)
    // execv only returns on failure: carry on with the default kernels.
}

/// Runs a command's work; a failure is printed as `squeeze: error: ...` and, under mpirun,
/// aborts every rank so none hangs in a collective. Argument errors pass through to the parser.
func guarded(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let error as ValidationError {
        throw error
    } catch let error as ExitCode {
        throw error
    } catch {
        Console.error("\(error)")
        if Runtime.isInitialized && Communicator.world.size > 1 {
            Communicator.world.abort(code: 1)
        }
        throw ExitCode.failure
    }
}

/// Reads a /proc file (their stat size is 0, so read until EOF).
func readProcFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var bytes: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = fread(&buf, 1, buf.count, f)
        if n <= 0 { break }
        bytes += buf[0..<n]
    }
    return String(decoding: bytes, as: UTF8.self)
}
