import CMPI
#if canImport(Glibc)
import Glibc
#endif

/// MPI's process-wide state: initialized once (funneled threads), finalised at exit.
public enum Runtime {
    nonisolated(unsafe) private static var initialized = false
    nonisolated(unsafe) private(set) static var isFinalized = false

    /// True once `initialize()` has run.
    public static var isInitialized: Bool { initialized }

    /// Initializes MPI if nothing has; safe to call many times (from the main thread).
    public static func initialize() {
        if initialized { return }
        var already: Int32 = 0
        MPI_Initialized(&already)
        if already == 0 {
            var provided: Int32 = 0
            let rc = MPI_Init_thread(nil, nil, squeeze_thread_funneled(), &provided)
            if rc != MPI_SUCCESS {
                fputs("squeeze: MPI_Init_thread failed with code \(rc)\n", stderr)
                exit(1)
            }
            atexit { Runtime.finalize() }
        }
        MPI_Comm_set_errhandler(squeeze_comm_world(), squeeze_errors_return())
        initialized = true
    }

    nonisolated(unsafe) private static var finalizers: [() -> Void] = []

    /// Runs `body` just before MPI_Finalize (collective clean-up such as freeing windows).
    public static func atFinalize(_ body: @escaping () -> Void) { finalizers.append(body) }

    /// Finalises MPI (called at exit; idempotent).
    public static func finalize() {
        guard initialized, !isFinalized else { return }
        for f in finalizers.reversed() { f() }
        finalizers = []
        var done: Int32 = 0
        MPI_Finalized(&done)
        if done == 0 { MPI_Finalize() }
        isFinalized = true
    }

    /// Wall-clock seconds (MPI_Wtime).
    public static func wtime() -> Double { MPI_Wtime() }
}
