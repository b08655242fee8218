#if canImport(Glibc)
import Glibc
#endif

/// The one place that writes to the terminal: results and progress on rank 0 only, errors and
/// warnings on stderr from any rank (prefixed with the rank when there are several).
public enum Console {
    nonisolated(unsafe) public static var rank = 0
    nonisolated(unsafe) public static var worldSize = 1
    /// Suppresses progress lines (e.g. under `--json`).
    nonisolated(unsafe) public static var quiet = false

    /// A result line on stdout (rank 0).
    public static func print(_ line: String) {
        guard rank == 0 else { return }
        Swift.print(line)
        fflush(stdout)
    }

    /// A progress or status line on stderr (rank 0, unless quiet).
    public static func status(_ line: String) {
        guard rank == 0, !quiet else { return }
        fputs(line + "\n", stderr)
    }

    /// A transient progress line that overwrites itself when stderr is a terminal.
    public static func progress(_ line: String) {
        guard rank == 0, !quiet else { return }
        if isatty(2) != 0 {
            fputs("\r\u{1B}[K" + line, stderr)
        } else {
            fputs(line + "\n", stderr)
        }
    }

    /// Ends a run of `progress` lines.
    public static func endProgress() {
        guard rank == 0, !quiet, isatty(2) != 0 else { return }
        fputs("\n", stderr)
    }

    /// A warning from any rank.
    public static func warning(_ message: String) {
        fputs("squeeze: warning\(rankTag): \(message)\n", stderr)
    }

    /// An error from any rank.
    public static func error(_ message: String) {
        fputs("squeeze: error\(rankTag): \(message)\n", stderr)
    }

    private static var rankTag: String { worldSize > 1 ? " (rank \(rank))" : "" }
}
