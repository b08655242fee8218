import CKernels
import Kernels
import MPI
import Tensor

/// `squeeze bench bf16`: BF16Matmul (oneDNN's BF16 kernels where available) against OpenBLAS
/// sgemm on the same shapes, y [m, n] = x [m, k] · Wᵀ with W [n, k] (BF16 for BF16Matmul, the
/// same values widened to F32 for sgemm). Every round runs, in this order: BF16Matmul twice
/// (the first right after OpenBLAS), sgemm twice (the first right after oneDNN), the forced
/// fallback (widened panels + sgemm) and BF16Matmul on one thread. Best-of times give the
/// speed-ups; the medians of "first" over "second" show what the other library's lingering
/// threads cost a call that follows it.
public struct BF16BenchRow: Codable, Sendable {
    public var m: Int, n: Int, k: Int
    /// oneDNN's implementation ("brg:avx512_core_bf16"), or "fallback".
    public var implementation: String
    /// Creating the shape's primitives (no product), then its first call (buffers, page faults).
    public var createSeconds: Double, firstCallSeconds: Double
    public var bf16Seconds: Double, sgemmSeconds: Double, fallbackSeconds: Double, bf16OneThreadSeconds: Double
    public var bf16Gflops: Double, sgemmGflops: Double, fallbackGflops: Double, bf16OneThreadGflops: Double
    /// sgemm time / BF16Matmul time (best of the rounds; > 1: BF16 is faster).
    public var speedup: Double
    /// BF16Matmul on one thread / on `threads` threads (about `threads` when both cores work).
    public var threadScaling: Double
    /// Median of (call right after the other library) / (call right after itself), per side.
    public var sgemmAfterOneDNN: Double, bf16AfterOpenBLAS: Double
}

public struct BF16BenchResult: Codable, Sendable {
    public var threads: Int
    public var available: Bool
    public var cpuHasAVX512BF16: Bool
    public var rounds: Int
    public var rows: [BF16BenchRow]
}

/// Runs the benchmark on `shapes` ([n, k] pairs) with `m` rows of activations.
public func runBF16Bench(m: Int = 1024, shapes: [[Int]] = [[2304, 768], [768, 768], [3072, 768], [768, 3072]],
                         rounds: Int = 8) -> BF16BenchResult {
    let threads = loopThreads
    var rows: [BF16BenchRow] = []
    for shape in shapes {
        rows.append(benchShape(m: m, n: shape[0], k: shape[1], rounds: rounds, threads: threads))
    }
    return BF16BenchResult(threads: threads, available: BF16Matmul.isAvailable, cpuHasAVX512BF16: squeeze_cpu_has_avx512_bf16() != 0,
                           rounds: rounds, rows: rows)
}

private func median(_ x: [Double]) -> Double {
    let s = x.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

private func benchShape(m: Int, n: Int, k: Int, rounds: Int, threads: Int) -> BF16BenchRow {
    let x = Tensor.randomNormal(shape: [m, k], seed: 21).data
    let w32 = Tensor.randomNormal(shape: [n, k], std: 0.02, seed: 22).data
    var w16 = [UInt16](repeating: 0, count: n * k)
    squeeze_f32_to_bf16_n(w32, &w16, n * k)
    var wide = [Float](repeating: 0, count: n * k)
    squeeze_bf16_to_f32_n(w16, &wide, n * k)
    var y = [Float](repeating: 0, count: m * n)
    let flops = 2 * Double(m) * Double(n) * Double(k)

    func bf16(_ t: Int) { BF16Matmul.gemm(m: m, n: n, k: k, a: x, b: w16, transB: true, c: &y, threads: t) }
    func blas() { sgemm(transB: true, m: m, n: n, k: k, a: x, b: wide, c: &y) }
    func fallback() {
        BF16Matmul.forceFallback = true
        bf16(threads)
        BF16Matmul.forceFallback = false
    }
    func time(_ body: () -> Void) -> Double {
        let t0 = Runtime.wtime()
        body()
        return Runtime.wtime() - t0
    }
    var impl = "fallback"
    let create = time { impl = BF16Matmul.implementation(m: m, n: n, k: k, transB: true, threads: threads) ?? impl }
    let first = time { bf16(threads) }
    bf16(1); blas(); fallback()  // warm-up (primitives, buffers, BLAS threads)
    var b1: [Double] = [], b2: [Double] = [], s1: [Double] = [], s2: [Double] = [], f: [Double] = [], one: [Double] = []
    for _ in 0..<rounds {
        b1.append(time { bf16(threads) }); b2.append(time { bf16(threads) })
        s1.append(time(blas)); s2.append(time(blas))
        f.append(time(fallback))
        one.append(time { bf16(1) })
    }
    let tb = min(b1.min()!, b2.min()!), ts = min(s1.min()!, s2.min()!), tf = f.min()!, t1 = one.min()!
    return BF16BenchRow(m: m, n: n, k: k, implementation: impl, createSeconds: create, firstCallSeconds: first,
                        bf16Seconds: tb, sgemmSeconds: ts, fallbackSeconds: tf, bf16OneThreadSeconds: t1,
                        bf16Gflops: flops / tb / 1e9, sgemmGflops: flops / ts / 1e9, fallbackGflops: flops / tf / 1e9,
                        bf16OneThreadGflops: flops / t1 / 1e9, speedup: ts / tb, threadScaling: t1 / tb,
                        sgemmAfterOneDNN: median(zip(s1, s2).map { $0 / $1 }),
                        bf16AfterOpenBLAS: median(zip(b1, b2).map { $0 / $1 }))
}
