import COpenBLAS

/// A thin singular value decomposition `A = U diag(S) Vt` with `U: m x k`, `Vt: k x n`,
/// singular values descending.
public struct SVD: Sendable {
    public var U: Tensor
    public var S: [Float]
    public var Vt: Tensor

    public init(U: Tensor, S: [Float], Vt: Tensor) {
        self.U = U
        self.S = S
        self.Vt = Vt
    }

    /// The rank-r truncation split evenly between two factors: `left = U_r √Σ_r` [m, r] and
    /// `right = V_r √Σ_r` [n, r], so that `left · rightᵀ` is the truncated matrix.
    public func balancedFactors(rank r: Int) -> (left: Tensor, right: Tensor) {
        let m = U.shape[0], n = Vt.shape[1], k = S.count
        var l = [Float](repeating: 0, count: m * r), rt = [Float](repeating: 0, count: n * r)
        for j in 0..<r {
            let root = Float(Double(S[j]).squareRoot())
            for i in 0..<m { l[i * r + j] = U.data[i * k + j] * root }
            for i in 0..<n { rt[i * r + j] = Vt.data[j * n + i] * root }
        }
        return (Tensor(uncheckedShape: [m, r], data: l), Tensor(uncheckedShape: [n, r], data: rt))
    }

    /// Keeps the leading `rank` triplets.
    public func truncated(to rank: Int) -> SVD {
        let r = Swift.min(rank, S.count)
        let m = U.shape[0], n = Vt.shape[1], k = S.count
        var u = [Float](repeating: 0, count: m * r)
        for i in 0..<m { for j in 0..<r { u[i * r + j] = U.data[i * k + j] } }
        return SVD(U: Tensor(uncheckedShape: [m, r], data: u), S: Array(S.prefix(r)),
                   Vt: Tensor(uncheckedShape: [r, n], data: Array(Vt.data.prefix(r * n))))
    }

    /// `U diag(S) Vt` as a dense matrix.
    public func reconstructed() -> Tensor {
        var us = U
        let k = S.count
        us.data.withUnsafeMutableBufferPointer { p in
            for i in 0..<U.shape[0] { for j in 0..<k { p[i * k + j] *= S[j] } }
        }
        do { return try us.matmul(Vt) }
        catch { fatalError("SVD.reconstructed: U is [m, k] and Vt [k, n] by construction: \(error)") }
    }
}

extension Tensor {
    /// Thin SVD by LAPACK's divide and conquer (`sgesdd`).
    ///
    /// Row-major `A` is column-major `Aᵀ`; LAPACK factors `Aᵀ = U' S V'ᵀ` and its column-major
    /// outputs are exactly row-major `V'` (= our U) and `U'ᵀ` (= our Vt): no transposes.
    public func svd() throws -> SVD {
        try require2D("svd")
        let m = shape[0], n = shape[1], k = Swift.min(m, n)
        var a = data
        var s = [Float](repeating: 0, count: k)
        var u = [Float](repeating: 0, count: m * k)
        var vt = [Float](repeating: 0, count: k * n)
        guard k > 0 else { return SVD(U: Tensor(shape: [m, 0]), S: [], Vt: Tensor(shape: [0, n])) }
        let info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "S")), Int32(n), Int32(m),
                                  &a, Int32(n), &s, &vt, Int32(n), &u, Int32(k))
        guard info == 0 else { throw TensorError.lapack("LAPACKE_sgesdd", info: info) }
        return SVD(U: Tensor(uncheckedShape: [m, k], data: u), S: s, Vt: Tensor(uncheckedShape: [k, n], data: vt))
    }

    /// Thin SVD computed in Double (`dgesdd`) and rounded: for references and ill-conditioned work.
    public func svdDouble() throws -> SVD {
        try require2D("svdDouble")
        let m = shape[0], n = shape[1], k = Swift.min(m, n)
        var a = data.map(Double.init)
        var s = [Double](repeating: 0, count: k)
        var u = [Double](repeating: 0, count: m * k)
        var vt = [Double](repeating: 0, count: k * n)
        guard k > 0 else { return SVD(U: Tensor(shape: [m, 0]), S: [], Vt: Tensor(shape: [0, n])) }
        let info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "S")), Int32(n), Int32(m),
                                  &a, Int32(n), &s, &vt, Int32(n), &u, Int32(k))
        guard info == 0 else { throw TensorError.lapack("LAPACKE_dgesdd", info: info) }
        return SVD(U: Tensor(uncheckedShape: [m, k], data: u.map(Float.init)), S: s.map(Float.init),
                   Vt: Tensor(uncheckedShape: [k, n], data: vt.map(Float.init)))
    }

    /// Singular values only (descending), computed in Double for accuracy.
    public func singularValues() throws -> [Float] {
        try singularValuesDouble().map(Float.init)
    }

    /// Singular values only, in Double (`dgesdd`, jobz = N).
    public func singularValuesDouble() throws -> [Double] {
        try require2D("singularValues")
        let m = shape[0], n = shape[1], k = Swift.min(m, n)
        guard k > 0 else { return [] }
        var a = data.map(Double.init)
        var s = [Double](repeating: 0, count: k)
        var dummyU = [Double](repeating: 0, count: 1), dummyVt = [Double](repeating: 0, count: 1)
        let info = LAPACKE_dgesdd(LAPACK_COL_MAJOR, Int8(UInt8(ascii: "N")), Int32(n), Int32(m),
                                  &a, Int32(n), &s, &dummyU, 1, &dummyVt, 1)
        guard info == 0 else { throw TensorError.lapack("LAPACKE_dgesdd", info: info) }
        return s
    }

    /// Spectral norm `||A||_2` (largest singular value).
    public func spectralNorm() throws -> Float { try singularValues().first ?? 0 }

    /// Top-`rank` SVD by a randomized range finder (Halko, Martinsson, Tropp 2011):
    /// `Y = A Ω` with `rank + oversample` Gaussian columns, `powerIterations` rounds of
    /// re-orthonormalized `(A Aᵀ)` products, then an exact SVD of the small `Qᵀ A`.
    public func randomizedSVD(rank: Int, oversample: Int = 10, powerIterations: Int = 2, seed: UInt64 = 0) throws -> SVD {
        try require2D("randomizedSVD")
        let m = shape[0], n = shape[1]
        guard rank >= 1 else { throw TensorError.argument("randomizedSVD", "rank must be >= 1, got \(rank)") }
        guard rank <= Swift.min(m, n) else {
            throw TensorError.argument("randomizedSVD", "rank \(rank) exceeds min(\(m), \(n))")
        }
        let l = Swift.min(rank + oversample, Swift.min(m, n))
        if l >= Swift.min(m, n) { return try svd().truncated(to: rank) }
        let omega = Tensor.randomNormal(shape: [n, l], seed: seed)
        var q = try orthonormalColumns(matmul(omega))              // m x l
        for _ in 0..<powerIterations {
            let z = try orthonormalColumns(matmul(q, transposeSelf: true))  // n x l  (Aᵀ Q)
            q = try orthonormalColumns(matmul(z))                            // m x l
        }
        let b = try q.matmul(self, transposeSelf: true)           // l x n
        let small = try b.svd()
        let u = try q.matmul(small.U)                               // m x l
        return SVD(U: u, S: small.S, Vt: small.Vt).truncated(to: rank)
    }
}

/// An orthonormal basis of the columns of a tall `m x l` matrix (Householder QR).
public func orthonormalColumns(_ y: Tensor) throws -> Tensor {
    try y.require2D("orthonormalColumns")
    let m = y.shape[0], l = y.shape[1]
    guard m >= l else { throw TensorError.shape("orthonormalColumns", "needs rows >= columns, got \(y.shape)") }
    // Row-major m x l is column-major l x m; QR needs column-major m x l, so transpose once.
    var a = try y.transposed().data
    var tau = [Float](repeating: 0, count: l)
    var info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, Int32(m), Int32(l), &a, Int32(m), &tau)
    guard info == 0 else { throw TensorError.lapack("LAPACKE_sgeqrf", info: info) }
    info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, Int32(m), Int32(l), Int32(l), &a, Int32(m), &tau)
    guard info == 0 else { throw TensorError.lapack("LAPACKE_sorgqr", info: info) }
    return try Tensor(uncheckedShape: [l, m], data: a).transposed()
}
