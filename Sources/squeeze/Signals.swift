#if canImport(Glibc)
import Glibc
#endif

/// SIGINT/SIGTERM ask the running training loop to write a checkpoint and stop at its next step
/// boundary (`Trainer.interruptRequested` polls `consume()`); a second signal exits at once.
enum SignalFlag {
    nonisolated(unsafe) static var request: sig_atomic_t = 0
    nonisolated(unsafe) static var received: sig_atomic_t = 0
    nonisolated(unsafe) static var installed = false

    /// Installs the handlers (once per process).
    static func install() {
        guard !installed else { return }
        installed = true
        let handler: @convention(c) (Int32) -> Void = { sig in
            if SignalFlag.received != 0 { _exit(128 + sig) }
            SignalFlag.received = 1
            SignalFlag.request = 1
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
    }

    /// True once per signal: the request is cleared by the poll that sees it.
    static func consume() -> Bool {
        guard request != 0 else { return false }
        request = 0
        return true
    }
}
