import COpenBLAS

// Double-precision LAPACK/BLAS for the numerics that need it (SparseGPT's Hessian algebra, whitening,
// calibration Gram matrices), so the libraries above never call LAPACK themselves.

/// Row-major `C = alpha · op(A) [m, k] · op(B) [k, n] + beta · C` in Double (BLAS dgemm); op
/// transposes the stored matrix when `transA` / `transB`.
public func dgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int, alpha: Double = 1, a: UnsafePointer<Double>,
                  b: UnsafePointer<Double>, beta: Double = 0, c: UnsafeMutablePointer<Double>) {
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, Int32(m), Int32(n), Int32(k), alpha,
                a, Int32(transA ? m : k), b, Int32(transB ? k : n), beta, c, Int32(n))
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

/// Replaces the symmetric positive definite `h` (row-major n x n) by its lower Cholesky factor L,
/// H = L Lᵀ (upper triangle zero): LAPACK dpotrf. Throws when H is not positive definite.
public func lowerCholesky(_ h: inout [Double], n: Int) throws {
    let info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "L")), Int32(n), &h, Int32(n))
    guard info == 0 else { throw TensorError.lapack("Cholesky of the matrix", info: info) }
    for i in 0..<n { for j in (i + 1)..<n { h[i * n + j] = 0 } }
}

/// Replaces the symmetric positive definite `a` (row-major n x n) by its inverse: LAPACK dpotrf,
/// dpotri, both triangles filled.
public func symmetricInverse(_ a: inout [Double], n: Int) throws {
    var info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &a, Int32(n))
    guard info == 0 else { throw TensorError.lapack("Cholesky of the matrix", info: info) }
    info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, Int8(UInt8(ascii: "U")), Int32(n), &a, Int32(n))
    guard info == 0 else { throw TensorError.lapack("inverting the matrix", info: info) }
    for i in 0..<n { for j in 0..<i { a[i * n + j] = a[j * n + i] } }
}

/// `B [n, cols] ← op(L) B` or, with `inverse`, `op(L)⁻¹ B` (a triangular solve), for a lower
/// triangular row-major `L [n, n]`; op transposes when `transposed`. BLAS dtrmm / dtrsm.
public func lowerTriangular(_ l: UnsafePointer<Double>, n: Int, transposed: Bool, inverse: Bool, _ b: UnsafeMutablePointer<Double>, cols: Int) {
    let trans = transposed ? CblasTrans : CblasNoTrans
    if inverse {
        cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, trans, CblasNonUnit, Int32(n), Int32(cols), 1, l, Int32(n), b, Int32(cols))
    } else {
        cblas_dtrmm(CblasRowMajor, CblasLeft, CblasLower, trans, CblasNonUnit, Int32(n), Int32(cols), 1, l, Int32(n), b, Int32(cols))
    }
}

/// Thin SVD of a row-major Double matrix `a [m, n]`: `U [m, k]`, `S` (k, descending), `Vt [k, n]`
/// with k = min(m, n), row-major (LAPACK dgesdd on the column-major transpose, as `Tensor.svd`).
/// With `valuesOnly`, U and Vt are empty.
public func svdDouble(_ a: [Double], rows m: Int, cols n: Int, valuesOnly: Bool = false) throws -> (U: [Double], S: [Double], Vt: [Double]) {
    let k = min(m, n)
    guard k > 0 else { return ([], [], []) }
    var a = a
    var s = [Double](repeating: 0, count: k)
    var u = [Double](repeating: 0, count: valuesOnly ? 1 : m * k), vt = [Double](repeating: 0, count: valuesOnly ? 1 : k * n)
    let info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: valuesOnly ? "N" : "S")), Int32(n), Int32(m), &a, Int32(n), &s,
                              &vt, valuesOnly ? 1 : Int32(n), &u, valuesOnly ? 1 : Int32(k))
    guard info == 0 else { throw TensorError.lapack("LAPACKE_dgesdd", info: info) }
    return valuesOnly ? ([], s, []) : (u, s, vt)
}
