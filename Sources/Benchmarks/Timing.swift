import MPI

/// Best-of-`repeats` wall time of `body` in seconds (after one warm-up call).
public func bestTime(repeats: Int = 5, warmup: Int = 1, _ body: () throws -> Void) rethrows -> Double {
    for _ in 0..<warmup { try body() }
    var best = Double.infinity
    for _ in 0..<repeats {
        let t0 = Runtime.wtime()
        try body()
        best = min(best, Runtime.wtime() - t0)
    }
    return best
}

/// Best times of two bodies measured interleaved, so drift affects both alike.
public func bestTimes(repeats: Int = 5, _ a: () throws -> Void, _ b: () throws -> Void) rethrows -> (Double, Double) {
    try a(); try b()
    var ta = Double.infinity, tb = Double.infinity
    for _ in 0..<repeats {
        var t0 = Runtime.wtime(); try a(); ta = min(ta, Runtime.wtime() - t0)
        t0 = Runtime.wtime(); try b(); tb = min(tb, Runtime.wtime() - t0)
    }
    return (ta, tb)
}
