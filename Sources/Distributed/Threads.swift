import MPI
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Per-rank BLAS threading: cores on this node divided by ranks on this node, unless the user
/// set OPENBLAS_NUM_THREADS. Returns the thread count in use.
@discardableResult
public func configureThreads(comm: Communicator = .world) throws -> Int {
    if let env = getenv("OPENBLAS_NUM_THREADS"), let n = Int(String(cString: env)), n > 0 {
        BLAS.setThreads(n)
        return n
    }
    let local = try comm.size > 1 ? comm.splitShared().size : 1
    let cores = Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    let n = max(1, cores / max(local, 1))
    BLAS.setThreads(n)
    return n
}
