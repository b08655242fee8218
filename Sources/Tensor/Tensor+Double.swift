import COpenBLAS

// Double-precision LAPACK/BLAS for the numerics that need it (SparseGPT's Hessian algebra,
// calibration Gram matrices), so the libraries above never call LAPACK themselves.

/// Row-major `C = alpha · A [m, k] · B [k, n] + beta · C` in Double (BLAS dgemm).
public func dgemm(transA: Bool = false, m: Int, n: Int, k: Int, alpha: Double = 1, a: UnsafePointer<Double>, b: UnsafePointer<Double>,
                  beta: Double = 0, c: UnsafeMutablePointer<Double>) {
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha, a, Int32(transA ? m : k),
                b, Int32(n), beta, c, Int32(n))
}

/// H (upper triangle, row-major cols x cols) += Xᵀ X in Double for X row-major [rows, cols] (BLAS
/// dsyrk, in slices of 256 rows so the Double copy stays small).
public func accumulateGram(_ x: UnsafePointer<Float>, rows: Int, cols n: Int, into h: UnsafeMutablePointer<Double>) {
    let slice = 256
    withUnsafeTemporaryAllocation(of: Double.self, capacity: slice * n) { xd in
        var r0 = 0
        while r0 < rows {
            let k = min(slice, rows - r0)
            for i in 0..<(k * n) { xd[i] = Double(x[r0 * n + i]) }
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(n), Int32(k), 1, xd.baseAddress!, Int32(n), 1, h, Int32(n))
            r0 += k
        }
    }
}

/// Replaces the symmetric positive definite `h` (row-major n x n) by the upper Cholesky factor
/// of its inverse, U with H⁻¹ = Uᵀ U (lower triangle zero): LAPACK dpotrf, dpotri, dpotrf.
/// Throws naming the step that failed (not positive definite).
public func upperCholeskyOfInverse(_ h: inout [Double], n: Int) throws {
    func fail(_ step: String, _ info: Int32) -> TensorError { TensorError.lapack(step, info: info) }
    var info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &h, Int32(n))
    guard info == 0 else { throw fail("Cholesky of the matrix", info) }
    info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &h, Int32(n))
    guard info == 0 else { throw fail("inverting the matrix", info) }
    for i in 0..<n { for j in 0..<i { h[i * n + j] = h[j * n + i] } }   // symmetric inverse
    info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &h, Int32(n))
    guard info == 0 else { throw fail("Cholesky of the inverse", info) }
    for i in 0..<n { for j in 0..<i { h[i * n + j] = 0 } }
}
