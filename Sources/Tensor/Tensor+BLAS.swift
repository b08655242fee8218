import COpenBLAS

/// Row-major `C = alpha * op(A) * op(B) + beta * C` through `cblas_sgemm`; `op(A)` is `m x k`,
/// `op(B)` is `k x n`. Leading dimensions default to the packed row-major ones.
@inline(__always)
public func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                  alpha: Float = 1, a: UnsafePointer<Float>, lda: Int? = nil,
                  b: UnsafePointer<Float>, ldb: Int? = nil,
                  beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int? = nil) {
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(lda ?? (transA ? m : k)),
                b, Int32(ldb ?? (transB ? k : n)),
                beta, c, Int32(ldc ?? n))
}

/// BLAS threading for this process: the rank's share of the cores, used by OpenBLAS and by our
/// own parallel loops.
public enum BLAS {
    nonisolated(unsafe) private static var configured: Int?

    /// Sets OpenBLAS's thread count (per rank: cores per node / ranks per node).
    public static func setThreads(_ n: Int) {
        configured = max(1, n)
        squeeze_blas_set_threads(Int32(max(1, n)))
    }

    /// The rank's thread count (OpenBLAS's own default until `setThreads`).
    public static var threads: Int { configured ?? Int(squeeze_blas_threads()) }

    /// Runs `body` with OpenBLAS single-threaded, for small GEMMs that several of our own workers
    /// issue at once (each in its own thread); restores the rank's thread count afterwards.
    public static func singleThreaded<T>(_ body: () throws -> T) rethrows -> T {
        let n = threads
        if n == 1 { return try body() }
        squeeze_blas_set_threads(1)
        defer { squeeze_blas_set_threads(Int32(n)) }
        return try body()
    }
}

extension Tensor {
    /// Matrix product `op(self) * op(other)` of 2-D tensors (BLAS sgemm).
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) throws -> Tensor {
        try require2D("matmul")
        try other.require2D("matmul")
        let (m, k) = transposeSelf ? (shape[1], shape[0]) : (shape[0], shape[1])
        let (k2, n) = transposeOther ? (other.shape[1], other.shape[0]) : (other.shape[0], other.shape[1])
        guard k == k2 else {
            throw TensorError.shape("matmul", "inner dimensions differ: \(shape)\(transposeSelf ? "ᵀ" : "") x \(other.shape)\(transposeOther ? "ᵀ" : "")")
        }
        var out = [Float](repeating: 0, count: m * n)
        if m > 0 && n > 0 && k > 0 {
            data.withUnsafeBufferPointer { a in
                other.data.withUnsafeBufferPointer { b in
                    out.withUnsafeMutableBufferPointer { c in
                        sgemm(transA: transposeSelf, transB: transposeOther, m: m, n: n, k: k,
                              a: a.baseAddress!, lda: shape[1], b: b.baseAddress!, ldb: other.shape[1],
                              c: c.baseAddress!)
                    }
                }
            }
        }
        return Tensor(uncheckedShape: [m, n], data: out)
    }

    /// Element-wise difference (same shapes).
    public static func - (a: Tensor, b: Tensor) -> Tensor {
        precondition(a.shape == b.shape, "Tensor -: shapes \(a.shape) and \(b.shape) differ")
        var out = a.data
        out.withUnsafeMutableBufferPointer { o in
            b.data.withUnsafeBufferPointer { q in for i in o.indices { o[i] -= q[i] } }
        }
        return Tensor(uncheckedShape: a.shape, data: out)
    }

}
