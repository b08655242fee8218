import Dispatch
import Tensor
#if canImport(Glibc)
import Glibc
#endif

/// Worker count of our own parallel loops: BLAS's per-rank thread count, or N when the checking
/// knob SQUEEZE_LOOP_CHECK_THREADS=N is set (see `loopCheckThreads`).
public var loopThreads: Int { loopCheckThreads ?? BLAS.threads }

/// SQUEEZE_LOOP_CHECK_THREADS=N (N >= 1), read once: a checking mode for thread sanitizers, not for
/// speed. Every `parallelFor` over at least 2 items then runs as min(N, n) chunks whatever its
/// `minChunk`, chunk 0 on the calling thread and the others always on Dispatch worker threads.
/// Otherwise the tests' small sizes keep most loops below their `minChunk`, and
/// `concurrentPerform` runs a short loop's chunks all on the calling thread, so ThreadSanitizer
/// would see few of our loops run concurrently. `scripts/test.sh --sanitize thread` sets it to 2
/// (with OpenBLAS single-threaded; OpenBLAS is not instrumented).
let loopCheckThreads: Int? = {
    guard let s = getenv("SQUEEZE_LOOP_CHECK_THREADS"), let n = Int(String(cString: s)), n > 0 else { return nil }
    return n
}()

/// Number of chunks `parallelFor(n, minChunk:)` splits `0..<n` into (at least 1).
public func loopWorkers(_ n: Int, minChunk: Int = 1) -> Int {
    let chunk = loopCheckThreads == nil ? max(minChunk, 1) : 1
    return max(1, min(loopThreads, n / chunk))
}

/// Splits `0..<n` into contiguous chunks, one per core of this rank, and runs them in parallel.
/// Small ranges run inline. The chunk count is `loopWorkers(n, minChunk:)`.
@inline(__always)
public func parallelFor(_ n: Int, minChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = n < 2 ? 1 : loopWorkers(n, minChunk: minChunk)
    if workers <= 1 {
        body(0..<n)
        return
    }
    if loopCheckThreads != nil {
        spreadFor(n, workers: workers, body)
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if lo < hi { body(lo..<hi) }
    }
}

/// `parallelFor` in the checking mode: chunk 0 on the caller, chunks 1..< on Dispatch's global
/// queue, joined before returning (so `body` does not outlive the call).
@inline(never)
func spreadFor(_ n: Int, workers: Int, _ body: (Range<Int>) -> Void) {
    withoutActuallyEscaping(body) { body in
        let group = DispatchGroup()
        for w in 1..<workers {
            DispatchQueue.global().async(group: group) { body((n * w / workers)..<(n * (w + 1) / workers)) }
        }
        body(0..<(n / workers))
        group.wait()
    }
}
