import COpenBLAS

// Householder QR (LAPACK ?geqrf / ?ormqr) and a thin SVD of column-major buffers (?gesdd), in
// single and double precision: the building blocks of the distributed tall-matrix SVD (TSQR).

/// The element types of the LAPACK wrappers in this file: `Float` (s-routines) and `Double` (d-routines).
public protocol LAPACKScalar: BinaryFloatingPoint, Sendable {
    /// "s" or "d": the routine prefix, for error messages.
    static var lapackPrefix: String { get }
    static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ lda: Int32,
                      _ tau: UnsafeMutablePointer<Self>) -> Int32
    static func ormqr(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32,
                      _ a: UnsafePointer<Self>, _ lda: Int32, _ tau: UnsafePointer<Self>,
                      _ c: UnsafeMutablePointer<Self>, _ ldc: Int32) -> Int32
    static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ lda: Int32,
                      _ s: UnsafeMutablePointer<Self>, _ u: UnsafeMutablePointer<Self>, _ ldu: Int32,
                      _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32) -> Int32
}

private let jobS = CChar(UInt8(ascii: "S"))

extension Float: LAPACKScalar {
    public static var lapackPrefix: String { "s" }
    public static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ lda: Int32,
                             _ tau: UnsafeMutablePointer<Float>) -> Int32 {
        LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau)
    }
    public static func ormqr(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32,
                             _ a: UnsafePointer<Float>, _ lda: Int32, _ tau: UnsafePointer<Float>,
                             _ c: UnsafeMutablePointer<Float>, _ ldc: Int32) -> Int32 {
        LAPACKE_sormqr(LAPACK_COL_MAJOR, side, trans, m, n, k, a, lda, tau, c, ldc)
    }
    public static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Float>, _ ldvt: Int32) -> Int32 {
        LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobS, m, n, a, lda, s, u, ldu, vt, ldvt)
    }
}

extension Double: LAPACKScalar {
    public static var lapackPrefix: String { "d" }
    public static func geqrf(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ lda: Int32,
                             _ tau: UnsafeMutablePointer<Double>) -> Int32 {
        LAPACKE_dgeqrf(LAPACK_COL_MAJOR, m, n, a, lda, tau)
    }
    public static func ormqr(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32,
                             _ a: UnsafePointer<Double>, _ lda: Int32, _ tau: UnsafePointer<Double>,
                             _ c: UnsafeMutablePointer<Double>, _ ldc: Int32) -> Int32 {
        LAPACKE_dormqr(LAPACK_COL_MAJOR, side, trans, m, n, k, a, lda, tau, c, ldc)
    }
    public static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Double>, _ u: UnsafeMutablePointer<Double>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Double>, _ ldvt: Int32) -> Int32 {
        LAPACKE_dgesdd(LAPACK_COL_MAJOR, jobS, m, n, a, lda, s, u, ldu, vt, ldvt)
    }
}

/// `A = Q R` by Householder reflections (LAPACK `?geqrf`), kept in LAPACK's compact form: `Q` is
/// never formed; `applyQ` multiplies by it (`?ormqr`), which for `k` columns costs about
/// `4·rows·cols·k` flops instead of the `2·rows·cols²` that forming `Q` (`?orgqr`) would.
public struct HouseholderQR<Scalar: LAPACKScalar>: Sendable {
    /// Rows and columns of `A`.
    public let rows: Int, cols: Int
    /// Column-major `rows x cols` (leading dimension `max(1, rows)`): `R` on and above the
    /// diagonal, the Householder vectors below it.
    public private(set) var factors: [Scalar]
    /// The reflectors' scalar factors (`reflectors` of them).
    public private(set) var tau: [Scalar]

    /// Number of Householder reflectors, `min(rows, cols)`: `Q` is `rows x reflectors` and `R`
    /// is `reflectors x cols` in the thin factorization.
    public var reflectors: Int { Swift.min(rows, cols) }

    /// Factors a column-major `rows x cols` matrix (`a.count == rows * cols`).
    public init(columnMajor a: [Scalar], rows: Int, cols: Int) throws {
        guard rows >= 0, cols >= 0, a.count == rows * cols else {
            throw TensorError.shape("HouseholderQR", "\(a.count) elements for a \(rows) x \(cols) matrix")
        }
        self.rows = rows
        self.cols = cols
        factors = a
        tau = [Scalar](repeating: 0, count: Swift.min(rows, cols))
        guard rows > 0, cols > 0 else { return }
        let info = factors.withUnsafeMutableBufferPointer { f in
            tau.withUnsafeMutableBufferPointer { t in
                Scalar.geqrf(Int32(rows), Int32(cols), f.baseAddress!, Int32(rows), t.baseAddress!)
            }
        }
        guard info == 0 else { throw TensorError.lapack("LAPACKE_\(Scalar.lapackPrefix)geqrf", info: info) }
    }

    /// The thin `R`: row-major `reflectors x cols`, upper trapezoidal (zeros below the diagonal).
    public var r: [Scalar] {
        let h = reflectors
        var out = [Scalar](repeating: 0, count: h * cols)
        for i in 0..<h { for j in i..<cols { out[i * cols + j] = factors[j * rows + i] } }
        return out
    }

    /// Overwrites the column-major `rows x k` matrix `c` (leading dimension `rows`) with `Q c`
    /// (or `Qᵀ c` when `transposed`), `Q` being the full `rows x rows` orthogonal factor. For the
    /// thin `Q` (`rows x reflectors`) times a `reflectors x k` matrix `X`, pass `[X; 0]`.
    public func applyQ(to c: inout [Scalar], columns k: Int, transposed: Bool = false) throws {
        guard k >= 0, c.count == rows * k else {
            throw TensorError.shape("HouseholderQR.applyQ", "\(c.count) elements for a \(rows) x \(k) matrix")
        }
        guard rows > 0, k > 0, reflectors > 0 else { return }
        let trans = CChar(UInt8(ascii: transposed ? "T" : "N"))
        let info = factors.withUnsafeBufferPointer { f in
            tau.withUnsafeBufferPointer { t in
                c.withUnsafeMutableBufferPointer { cp in
                    Scalar.ormqr(CChar(UInt8(ascii: "L")), trans, Int32(rows), Int32(k), Int32(reflectors),
                                 f.baseAddress!, Int32(rows), t.baseAddress!, cp.baseAddress!, Int32(rows))
                }
            }
        }
        guard info == 0 else { throw TensorError.lapack("LAPACKE_\(Scalar.lapackPrefix)ormqr", info: info) }
    }
}

extension HouseholderQR where Scalar == Float {
    /// Factors the row block `rowRange` of a row-major 2-D tensor (transposed once into LAPACK's
    /// column-major layout; row-major `A` itself is column-major `Aᵀ`, whose LQ factorization
    /// `?gelqf` would avoid the copy, but measured 3.4x slower than `?geqrf` on 25128 x 768 with
    /// OpenBLAS 0.3.21, whose panel factorization then walks rows of a column-major matrix).
    public init(_ a: Tensor, rows rowRange: Range<Int>) throws {
        try a.require2D("HouseholderQR")
        guard rowRange.lowerBound >= 0, rowRange.upperBound <= a.shape[0] else {
            throw TensorError.argument("HouseholderQR", "rows \(rowRange) outside a matrix of \(a.shape[0]) rows")
        }
        let m = rowRange.count, n = a.shape[1]
        var colMajor = [Float](repeating: 0, count: m * n)
        if m > 0 && n > 0 {
            a.data.withUnsafeBufferPointer { src in
                colMajor.withUnsafeMutableBufferPointer { dst in
                    transpose(src.baseAddress! + rowRange.lowerBound * n, rows: m, cols: n, into: dst.baseAddress!)
                }
            }
        }
        try self.init(columnMajor: colMajor, rows: m, cols: n)
    }
}

extension Tensor {
    /// Householder QR of a 2-D tensor, kept in compact form (see `HouseholderQR`).
    public func householderQR() throws -> HouseholderQR<Float> {
        try require2D("householderQR")
        return try HouseholderQR(self, rows: 0..<shape[0])
    }
}

/// Thin SVD `A = U diag(s) Vᵀ` of a column-major `rows x cols` matrix by divide and conquer
/// (`?gesdd`, jobz = S). With `r = min(rows, cols)`: `u` is column-major `rows x r`, `s` has `r`
/// values (descending) and `vt` is column-major `r x cols`.
public func thinSVD<T: LAPACKScalar>(columnMajor a: [T], rows m: Int, cols n: Int) throws -> (u: [T], s: [T], vt: [T]) {
    guard m >= 0, n >= 0, a.count == m * n else {
        throw TensorError.shape("thinSVD", "\(a.count) elements for a \(m) x \(n) matrix")
    }
    let r = Swift.min(m, n)
    var work = a
    var s = [T](repeating: 0, count: r), u = [T](repeating: 0, count: m * r), vt = [T](repeating: 0, count: r * n)
    guard r > 0 else { return (u, s, vt) }
    let info = work.withUnsafeMutableBufferPointer { w in
        s.withUnsafeMutableBufferPointer { sp in
            u.withUnsafeMutableBufferPointer { up in
                vt.withUnsafeMutableBufferPointer { vp in
                    T.gesdd(Int32(m), Int32(n), w.baseAddress!, Int32(m), sp.baseAddress!,
                            up.baseAddress!, Int32(m), vp.baseAddress!, Int32(r))
                }
            }
        }
    }
    guard info == 0 else { throw TensorError.lapack("LAPACKE_\(T.lapackPrefix)gesdd", info: info) }
    return (u, s, vt)
}

extension SVD {
    /// The same factorization with a deterministic sign for each singular pair: in each row of
    /// `Vt`, the entry of largest magnitude (the first of equal ones) is made positive, and the
    /// matching column of `U` changes sign with it, so `U diag(S) Vt` is unchanged.
    ///
    /// Singular vectors are only defined up to sign; two correct SVDs of one matrix (LAPACK's and a
    /// distributed one, or the same routine on different rank counts) agree vector by vector after
    /// this, for simple singular values, unless the two largest entries of a row of `Vt` are equal
    /// in magnitude up to rounding.
    public func canonicalSigns() -> SVD {
        let k = S.count, n = Vt.shape[1], m = U.shape[0]
        var u = U, vt = Vt
        for i in 0..<k {
            var best = 0
            var bestAbs: Float = -1
            for j in 0..<n where abs(vt.data[i * n + j]) > bestAbs {
                bestAbs = abs(vt.data[i * n + j])
                best = j
            }
            guard n > 0, vt.data[i * n + best] < 0 else { continue }
            for j in 0..<n { vt.data[i * n + j] = -vt.data[i * n + j] }
            for r in 0..<m { u.data[r * k + i] = -u.data[r * k + i] }
        }
        return SVD(U: u, S: S, Vt: vt)
    }
}
