import COpenBLAS

// Householder QR (LAPACK ?geqrt / ?gemqrt) and a thin SVD of column-major buffers (?gesdd), in
// single and double precision: the building blocks of the distributed tall-matrix SVD (TSQR).

/// The element types of the LAPACK wrappers in this file: `Float` (s-routines) and `Double` (d-routines).
public protocol LAPACKScalar: BinaryFloatingPoint, Sendable {
    /// "s" or "d": the routine prefix, for error messages.
    static var lapackPrefix: String { get }
    /// `?geqrt` with a caller-provided workspace of `nb·n` elements.
    static func geqrt(_ m: Int32, _ n: Int32, _ nb: Int32, _ a: UnsafeMutablePointer<Self>, _ lda: Int32,
                      _ t: UnsafeMutablePointer<Self>, _ ldt: Int32, _ work: UnsafeMutablePointer<Self>) -> Int32
    /// `?gemqrt` with a caller-provided workspace (`nb·n` elements for side L, `nb·m` for side R).
    static func gemqrt(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32, _ nb: Int32,
                       _ v: UnsafePointer<Self>, _ ldv: Int32, _ t: UnsafePointer<Self>, _ ldt: Int32,
                       _ c: UnsafeMutablePointer<Self>, _ ldc: Int32, _ work: UnsafeMutablePointer<Self>) -> Int32
    static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Self>, _ lda: Int32,
                      _ s: UnsafeMutablePointer<Self>, _ u: UnsafeMutablePointer<Self>, _ ldu: Int32,
                      _ vt: UnsafeMutablePointer<Self>, _ ldvt: Int32) -> Int32
}

private let jobS = CChar(UInt8(ascii: "S"))

extension Float: LAPACKScalar {
    public static var lapackPrefix: String { "s" }
    public static func geqrt(_ m: Int32, _ n: Int32, _ nb: Int32, _ a: UnsafeMutablePointer<Float>, _ lda: Int32,
                             _ t: UnsafeMutablePointer<Float>, _ ldt: Int32, _ work: UnsafeMutablePointer<Float>) -> Int32 {
        LAPACKE_sgeqrt_work(LAPACK_COL_MAJOR, m, n, nb, a, lda, t, ldt, work)
    }
    public static func gemqrt(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32, _ nb: Int32,
                              _ v: UnsafePointer<Float>, _ ldv: Int32, _ t: UnsafePointer<Float>, _ ldt: Int32,
                              _ c: UnsafeMutablePointer<Float>, _ ldc: Int32, _ work: UnsafeMutablePointer<Float>) -> Int32 {
        LAPACKE_sgemqrt_work(LAPACK_COL_MAJOR, side, trans, m, n, k, nb, v, ldv, t, ldt, c, ldc, work)
    }
    public static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Float>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Float>, _ u: UnsafeMutablePointer<Float>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Float>, _ ldvt: Int32) -> Int32 {
        LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobS, m, n, a, lda, s, u, ldu, vt, ldvt)
    }
}

extension Double: LAPACKScalar {
    public static var lapackPrefix: String { "d" }
    public static func geqrt(_ m: Int32, _ n: Int32, _ nb: Int32, _ a: UnsafeMutablePointer<Double>, _ lda: Int32,
                             _ t: UnsafeMutablePointer<Double>, _ ldt: Int32, _ work: UnsafeMutablePointer<Double>) -> Int32 {
        LAPACKE_dgeqrt_work(LAPACK_COL_MAJOR, m, n, nb, a, lda, t, ldt, work)
    }
    public static func gemqrt(_ side: CChar, _ trans: CChar, _ m: Int32, _ n: Int32, _ k: Int32, _ nb: Int32,
                              _ v: UnsafePointer<Double>, _ ldv: Int32, _ t: UnsafePointer<Double>, _ ldt: Int32,
                              _ c: UnsafeMutablePointer<Double>, _ ldc: Int32, _ work: UnsafeMutablePointer<Double>) -> Int32 {
        LAPACKE_dgemqrt_work(LAPACK_COL_MAJOR, side, trans, m, n, k, nb, v, ldv, t, ldt, c, ldc, work)
    }
    public static func gesdd(_ m: Int32, _ n: Int32, _ a: UnsafeMutablePointer<Double>, _ lda: Int32,
                             _ s: UnsafeMutablePointer<Double>, _ u: UnsafeMutablePointer<Double>, _ ldu: Int32,
                             _ vt: UnsafeMutablePointer<Double>, _ ldvt: Int32) -> Int32 {
        LAPACKE_dgesdd(LAPACK_COL_MAJOR, jobS, m, n, a, lda, s, u, ldu, vt, ldvt)
    }
}

/// `A = Q R` by Householder reflections in LAPACK's compact WY form (`?geqrt`: blocks of
/// `blockSize` reflectors, each with its triangular factor `T`, recursive panels). `Q` is never
/// formed; `applyQ` multiplies by it (`?gemqrt`), which for `k` columns costs about
/// `4·rows·cols·k` flops instead of the `2·rows·cols²` that forming `Q` would.
///
/// On 25128 x 768, one thread (OpenBLAS 0.3.21, AVX-512 kernels), `sgeqrt` with 64-wide blocks
/// took 0.34 s against 0.50 s for `sgeqrf` (32-wide, unblocked panels), and `sgemqrt` with 192
/// columns 0.15 s against 0.22 s for `sormqr`.
public struct HouseholderQR<Scalar: LAPACKScalar>: Sendable {
    /// Rows and columns of `A`.
    public let rows: Int, cols: Int
    /// Reflectors per block (`1...64`, at most `reflectors`).
    public let blockSize: Int
    /// Column-major `rows x cols` (leading dimension `max(1, rows)`): `R` on and above the
    /// diagonal, the Householder vectors below it.
    public private(set) var factors: [Scalar]
    /// The blocks' upper-triangular factors: column-major `blockSize x reflectors`.
    public private(set) var t: [Scalar]

    /// Number of Householder reflectors, `min(rows, cols)`: `Q` is `rows x reflectors` and `R`
    /// is `reflectors x cols` in the thin factorization.
    public var reflectors: Int { Swift.min(rows, cols) }

    /// Factors a column-major `rows x cols` matrix (`a.count == rows * cols`).
    public init(columnMajor a: consuming [Scalar], rows: Int, cols: Int, blockSize: Int = 64) throws {
        guard rows >= 0, cols >= 0, a.count == rows * cols else {
            throw TensorError.shape("HouseholderQR", "\(a.count) elements for a \(rows) x \(cols) matrix")
        }
        guard blockSize >= 1 else { throw TensorError.argument("HouseholderQR", "block size must be >= 1, got \(blockSize)") }
        self.rows = rows
        self.cols = cols
        let h = Swift.min(rows, cols)
        self.blockSize = Swift.max(1, Swift.min(blockSize, h))
        factors = consume a   // moved, not copied, when the caller passes its last use
        t = [Scalar](repeating: 0, count: self.blockSize * h)
        guard h > 0 else { return }
        let nb = self.blockSize
        var work = [Scalar](repeating: 0, count: nb * cols)
        let info = factors.withUnsafeMutableBufferPointer { f in
            t.withUnsafeMutableBufferPointer { tp in
                work.withUnsafeMutableBufferPointer { w in
                    Scalar.geqrt(Int32(rows), Int32(cols), Int32(nb), f.baseAddress!, Int32(rows), tp.baseAddress!, Int32(nb), w.baseAddress!)
                }
            }
        }
        guard info == 0 else { throw TensorError.lapack("LAPACKE_\(Scalar.lapackPrefix)geqrt", info: info) }
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
        // Our own workspace (blockSize·k for side L): LAPACKE 3.11's LAPACKE_?gemqrt allocates
        // blockSize·rows instead, a heap overflow whenever c has more columns than rows.
        var work = [Scalar](repeating: 0, count: blockSize * k)
        let info = factors.withUnsafeBufferPointer { f in
            t.withUnsafeBufferPointer { tp in
                c.withUnsafeMutableBufferPointer { cp in
                    work.withUnsafeMutableBufferPointer { w in
                        Scalar.gemqrt(CChar(UInt8(ascii: "L")), trans, Int32(rows), Int32(k), Int32(reflectors), Int32(blockSize),
                                      f.baseAddress!, Int32(rows), tp.baseAddress!, Int32(blockSize), cp.baseAddress!, Int32(rows),
                                      w.baseAddress!)
                    }
                }
            }
        }
        guard info == 0 else { throw TensorError.lapack("LAPACKE_\(Scalar.lapackPrefix)gemqrt", info: info) }
    }
}

extension HouseholderQR where Scalar == Float {
    /// Factors the row block `rowRange` of a row-major 2-D tensor (transposed once into LAPACK's
    /// column-major layout; row-major `A` itself is column-major `Aᵀ`, whose LQ factorization
    /// `?gelqf` would avoid the copy, but measured 3.3x slower than `?geqrf` on 25128 x 768 with
    /// OpenBLAS 0.3.21: its panels walk the rows of a column-major matrix).
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

extension Tensor {
    /// Thin SVD by `sgesdd` of a column-major copy of `A` (two transposes), unlike `svd()`, which
    /// factors the column-major `Aᵀ` that row-major `A` already is. Same result up to rounding and
    /// signs; what differs is LAPACK's path for a tall matrix (rows > 11/6 cols): here `A = QR`
    /// by `sgeqrf` first, in `svd()` the LQ factorization of the wide `Aᵀ` by `sgelqf`, about 3x
    /// slower with OpenBLAS 0.3.21 (50257 x 768, 2 threads, AVX-512 kernels: 3.1 s against 9.0 s).
    public func svdColumnMajor() throws -> SVD {
        try require2D("svdColumnMajor")
        let m = shape[0], n = shape[1], r = Swift.min(m, n)
        let f = try thinSVD(columnMajor: transposed().data, rows: m, cols: n)
        // Column-major U (m x r) is row-major Uᵀ; column-major Vᵀ (r x n) is row-major V.
        return SVD(U: try Tensor(uncheckedShape: [r, m], data: f.u).transposed(), S: f.s,
                   Vt: try Tensor(uncheckedShape: [n, r], data: f.vt).transposed())
    }
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
        for (i, flip) in canonicalSignFlips(vt.data, rows: k, cols: n).enumerated() where flip {
            for j in 0..<n { vt.data[i * n + j] = -vt.data[i * n + j] }
            for r in 0..<m { u.data[r * k + i] = -u.data[r * k + i] }
        }
        return SVD(U: u, S: S, Vt: vt)
    }
}

/// For each row of a row-major `rows x cols` matrix (the rows of `Vt`), whether its sign must
/// flip so that its entry of largest magnitude (the first of equal ones) is positive: the one
/// sign rule of `SVD.canonicalSigns` and the distributed SVDs.
public func canonicalSignFlips(_ vt: [Float], rows k: Int, cols n: Int) -> [Bool] {
    (0..<k).map { i in
        guard n > 0 else { return false }
        var best = 0
        var bestAbs: Float = -1
        for j in 0..<n where abs(vt[i * n + j]) > bestAbs {
            bestAbs = abs(vt[i * n + j])
            best = j
        }
        return vt[i * n + best] < 0
    }
}
