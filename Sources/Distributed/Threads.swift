import Reporting
import MPI
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Per-rank BLAS threading: cores on this node divided by ranks on this node, but never more than
/// the CPUs this process may run on (mpirun binds each rank to one core by default for np <= 2).
/// `requested` (the executable passes OPENBLAS_NUM_THREADS), when given, wins. Returns the thread
/// count in use.
@discardableResult
public func configureThreads(comm: Communicator = .world, requested: Int? = nil) throws -> Int {
    if let n = requested {
        if let allowed = allowedCPUs(), allowed < n {
            Console.warning("OPENBLAS_NUM_THREADS=\(n) but this rank may only run on \(allowed) CPU(s); add --bind-to none to mpirun")
        }
        BLAS.setThreads(n)
        return n
    }
    let local = try comm.size > 1 ? comm.splitShared().size : 1
    let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let share = max(1, cores / max(local, 1))
    let allowed = allowedCPUs() ?? share
    if allowed < share {
        Console.warning("this rank may only run on \(allowed) CPU(s) but \(share) are its share of the node; "
                        + "mpirun binds ranks to cores by default — add --bind-to none (or --map-by slot:PE=\(share)) to use them")
    }
    let n = max(1, min(share, allowed))
    BLAS.setThreads(n)
    return n
}

/// Number of CPUs in this process's affinity mask, from the `Cpus_allowed` hex mask of
/// /proc/self/status (nil if unknown).
func allowedCPUs() -> Int? {
    guard let f = fopen("/proc/self/status", "r") else { return nil }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 4096)
    while fgets(&line, Int32(line.count), f) != nil {
        let text = String(cString: line)
        guard text.hasPrefix("Cpus_allowed:") else { continue }
        let hex = text.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
        return hex.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
    }
    return nil
}
