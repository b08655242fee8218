import ArgumentParser
import MPI

/// The `squeeze` command: compress GPT-2-family models and measure them, on one or many MPI ranks.
struct Squeeze: ParsableCommand {
    static let version = "0.1.0"
    static let configuration = CommandConfiguration(
        commandName: "squeeze",
        abstract: "Compress GPT-2-family models (pruning, Kronecker, low rank) with distillation, over MPI.",
        discussion: "Run under mpirun to use several ranks: mpirun -np 4 squeeze compress ...",
        version: version,
        subcommands: [Eval.self, Generate.self, Train.self, Bench.self])
}

@main
extension Squeeze {}

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
