import Dispatch
import Tensor

/// Splits `0..<n` into contiguous chunks, one per core of this rank, and runs them in parallel.
/// Small ranges run inline. `threads` follows BLAS's per-rank thread count.
@inline(__always)
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(BLAS.threads, max(1, n / max(minChunk, 1)))
    if workers <= 1 || n < 2 {
        body(0..<n)
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(lo..<hi) }
    }
}
