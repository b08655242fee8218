import Foundation
import Tensor
import XCTest

// MARK: - Shared helpers (also used by CommunicatorTests and MultiRankTests)

/// Matrices with a known factorization, built from seeded random orthonormal factors.
enum KnownMatrix {
    /// `rows x cols` (rows >= cols) with orthonormal columns: Householder QR of a Gaussian matrix.
    static func orthonormal(rows: Int, cols: Int, seed: UInt64) throws -> Tensor {
        try orthonormalColumns(Tensor.randomNormal(shape: [rows, cols], seed: seed))
    }

    /// `A = U diag(s) Vᵀ` (`m x n`) with random orthonormal `U: m x s.count`, `V: n x s.count`;
    /// the product is accumulated in Double and rounded once, so A's singular values are `s`
    /// up to Float rounding of the factors and of A.
    static func withSpectrum(rows m: Int, cols n: Int, _ s: [Double], seed: UInt64) throws -> (a: Tensor, u: Tensor, v: Tensor) {
        let k = s.count
        precondition(k <= min(m, n), "spectrum longer than min(m, n)")
        let u = try orthonormal(rows: m, cols: k, seed: seed)
        let v = try orthonormal(rows: n, cols: k, seed: seed &+ 0x5EED)
        var a = [Float](repeating: 0, count: m * n)
        u.data.withUnsafeBufferPointer { up in
            v.data.withUnsafeBufferPointer { vp in
                a.withUnsafeMutableBufferPointer { ap in
                    var row = [Double](repeating: 0, count: k)
                    for i in 0..<m {
                        for p in 0..<k { row[p] = Double(up[i * k + p]) * s[p] }
                        for j in 0..<n {
                            var acc = 0.0
                            for p in 0..<k { acc += row[p] * Double(vp[j * k + p]) }
                            ap[i * n + j] = Float(acc)
                        }
                    }
                }
            }
        }
        return (try Tensor(shape: [m, n], data: a), u, v)
    }

    /// `count` values falling geometrically from `first` to `last`.
    static func geometric(_ count: Int, from first: Double, to last: Double) -> [Double] {
        guard count > 1 else { return [first] }
        let ratio = pow(last / first, 1 / Double(count - 1))
        return (0..<count).map { first * pow(ratio, Double($0)) }
    }

    /// The spectrum used by the closed-form SVD tests: 10, 5, 2, 1, 0.5, then geometric down to 0.1.
    static func steppedSpectrum(_ count: Int) -> [Double] {
        let head: [Double] = [10, 5, 2, 1, 0.5]
        guard count > head.count else { return Array(head.prefix(count)) }
        return head + geometric(count - head.count + 1, from: 0.5, to: 0.1).dropFirst()
    }
}

/// `op(A) * op(B)` by the textbook triple loop in Double, from row-major storage.
func naiveMatmul(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> [Double] {
    let m = transposeA ? a.cols : a.rows, k = transposeA ? a.rows : a.cols
    let n = transposeB ? b.rows : b.cols
    var out = [Double](repeating: 0, count: m * n)
    for i in 0..<m {
        for j in 0..<n {
            var acc = 0.0
            for p in 0..<k {
                let x = transposeA ? a[p, i] : a[i, p]
                let y = transposeB ? b[j, p] : b[p, j]
                acc += Double(x) * Double(y)
            }
            out[i * n + j] = acc
        }
    }
    return out
}

/// Max over i of |got_i - want_i| / |want_i| (want_i != 0).
func maxRelative(_ got: [Float], _ want: [Double]) -> Double {
    precondition(got.count == want.count)
    return zip(got, want).map { abs(Double($0) - $1) / abs($1) }.max() ?? 0
}

/// `||A - B||_F / ||B||_F`, accumulated in Double.
func relativeFrobenius(_ a: Tensor, _ b: Tensor) -> Double {
    precondition(a.shape == b.shape, "shapes \(a.shape) vs \(b.shape)")
    var num = 0.0, den = 0.0
    for i in a.data.indices {
        let d = Double(a.data[i]) - Double(b.data[i])
        num += d * d
        den += Double(b.data[i]) * Double(b.data[i])
    }
    return (num / max(den, 1e-300)).squareRoot()
}

/// Largest |(QᵀQ - I)_ij| for the columns of `q` (`columns: true`) or its rows.
func orthonormalityError(_ q: Tensor, columns: Bool) throws -> Float {
    let g = columns ? try q.matmul(q, transposeSelf: true) : try q.matmul(q, transposeOther: true)
    var worst: Float = 0
    for i in 0..<g.rows { for j in 0..<g.cols { worst = max(worst, abs(g[i, j] - (i == j ? 1 : 0))) } }
    return worst
}

/// Asserts `expression` throws an error whose description names `operation`.
func assertThrowsNaming<T>(_ operation: String, _ expression: @autoclosure () throws -> T,
                           file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try expression(), "expected \(operation) to throw", file: file, line: line) { error in
        XCTAssertTrue(String(describing: error).contains(operation),
                      "error \"\(error)\" does not name \(operation)", file: file, line: line)
    }
}

// MARK: - Tests

/// BLAS matmul, LAPACK SVD, norms and randomized SVD against naive loops and closed forms.
final class TensorTests: XCTestCase {
    // MARK: matmul

    /// All four transpose combinations against the triple loop, for a small and a blocked size.
    func testMatmulAllTransposeCombinationsMatchNaiveLoop() throws {
        for (m, k, n) in [(7, 5, 9), (65, 33, 70)] {
            for transposeA in [false, true] {
                for transposeB in [false, true] {
                    let what = "m=\(m) k=\(k) n=\(n) tA=\(transposeA) tB=\(transposeB)"
                    let a = Tensor.randomNormal(shape: transposeA ? [k, m] : [m, k], seed: UInt64(m * 100 + k))
                    let b = Tensor.randomNormal(shape: transposeB ? [n, k] : [k, n], seed: UInt64(n * 100 + k + 1))
                    let c = try a.matmul(b, transposeSelf: transposeA, transposeOther: transposeB)
                    XCTAssertEqual(c.shape, [m, n], what)
                    let want = naiveMatmul(a, b, transposeA: transposeA, transposeB: transposeB)
                    let scale = want.map(abs).max()!
                    let err = zip(c.data, want).map { abs(Double($0) - $1) }.max()!
                    XCTAssertLessThanOrEqual(err / scale, 1e-5, "\(what): max abs error \(err), scale \(scale)")
                }
            }
        }
    }

    /// Degenerate sizes: an empty inner dimension gives zeros, an empty outer one an empty result.
    func testMatmulEmptyDimensions() throws {
        let a = Tensor(shape: [3, 0]), b = Tensor(shape: [0, 4])
        let c = try a.matmul(b)
        XCTAssertEqual(c.shape, [3, 4])
        XCTAssertEqual(c.data, [Float](repeating: 0, count: 12))
        XCTAssertEqual(try b.matmul(Tensor(shape: [4, 2], repeating: 1)).shape, [0, 2])
    }

    func testMatmulIncompatibleShapesThrow() {
        let a = Tensor(shape: [2, 3], repeating: 1), b = Tensor(shape: [4, 5], repeating: 1)
        assertThrowsNaming("matmul", try a.matmul(b))
        assertThrowsNaming("matmul", try a.matmul(Tensor(shape: [3, 2], repeating: 1), transposeSelf: true))
        assertThrowsNaming("matmul", try a.matmul(Tensor(shape: [2, 3], repeating: 1), transposeOther: false))
        assertThrowsNaming("matmul", try a.matmul(Tensor(shape: [3], repeating: 1)))
        assertThrowsNaming("matmul", try Tensor(shape: [2, 2, 2]).matmul(a))
        // The compatible transposed forms of the same operands work.
        XCTAssertEqual(try a.matmul(Tensor(shape: [2, 3], repeating: 1), transposeOther: true).shape, [2, 2])
        XCTAssertEqual(try a.matmul(Tensor(shape: [2, 5], repeating: 1), transposeSelf: true).shape, [3, 5])
    }

    func testTensorInitWithWrongCountThrows() throws {
        assertThrowsNaming("Tensor(shape:data:)", try Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5]))
        assertThrowsNaming("Tensor(shape:data:)", try Tensor(shape: [2], data: [1, 2, 3]))
        assertThrowsNaming("Tensor(shape:data:)", try Tensor(shape: [-1, -2], data: [1, 2]))
        let t = try Tensor(shape: [2, 3], data: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(t[1, 2], 6)
        XCTAssertEqual(try t.transposed().data, [1, 4, 2, 5, 3, 6])
        assertThrowsNaming("reshaped", try t.reshaped([4, 2]))
    }

    // MARK: SVD

    /// `svd()` (sgesdd) agrees with the Double `svdDouble()` (dgesdd) on Gaussian matrices, tall and wide:
    /// values, singular vectors up to sign, orthonormality and reconstruction.
    func testSVDMatchesDoubleReference() throws {
        for shape in [[40, 25], [25, 40]] {
            let a = Tensor.randomNormal(shape: shape, seed: 11)
            let f = try a.svd(), d = try a.svdDouble()
            let k = min(shape[0], shape[1])
            XCTAssertEqual(f.U.shape, [shape[0], k]); XCTAssertEqual(f.Vt.shape, [k, shape[1]])
            XCTAssertEqual(f.S.count, k)
            XCTAssertLessThanOrEqual(maxRelative(f.S, d.S.map(Double.init)), 1e-5, "\(shape): S \(f.S) vs \(d.S)")
            XCTAssertEqual(f.S, f.S.sorted(by: >), "\(shape): descending")
            // Same singular vectors up to sign: |<u_f, u_d>| = 1 for every (simple) singular value.
            let uu = try f.U.matmul(d.U, transposeSelf: true), vv = try f.Vt.matmul(d.Vt, transposeOther: true)
            for i in 0..<k {
                XCTAssertEqual(abs(uu[i, i]), 1, accuracy: 1e-4, "\(shape): U column \(i)")
                XCTAssertEqual(abs(vv[i, i]), 1, accuracy: 1e-4, "\(shape): V column \(i)")
            }
            XCTAssertLessThanOrEqual(try orthonormalityError(f.U, columns: true), 1e-5, "\(shape): UᵀU")
            XCTAssertLessThanOrEqual(try orthonormalityError(f.Vt, columns: false), 1e-5, "\(shape): Vt Vtᵀ")
            XCTAssertLessThanOrEqual(relativeFrobenius(f.reconstructed(), a), 1e-5, "\(shape): U S Vt")
            XCTAssertLessThanOrEqual(relativeFrobenius(d.reconstructed(), a), 1e-6, "\(shape): double U S Vt")
        }
    }

    /// Closed form: `A = U diag(s) Vᵀ` with s = 10, 5, 2, 1, 0.5, ... gives back s, orthonormal
    /// factors, and reconstructs A; tall and wide.
    func testSVDRecoversKnownSpectrum() throws {
        for (m, n) in [(60, 24), (24, 60), (33, 33)] {
            let k = min(m, n)
            let s = KnownMatrix.steppedSpectrum(k)
            let (a, _, _) = try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: UInt64(m * n))
            for (name, f) in [("svd", try a.svd()), ("svdDouble", try a.svdDouble())] {
                let what = "\(name) \(m)x\(n)"
                XCTAssertEqual(f.S.count, k, what)
                XCTAssertLessThanOrEqual(maxRelative(f.S, s), 1e-5, "\(what): S \(f.S.prefix(6))...")
                XCTAssertLessThanOrEqual(try orthonormalityError(f.U, columns: true), 1e-5, "\(what): UᵀU")
                XCTAssertLessThanOrEqual(try orthonormalityError(f.Vt, columns: false), 1e-5, "\(what): Vt Vtᵀ")
                XCTAssertLessThanOrEqual(relativeFrobenius(f.reconstructed(), a), 1e-5, "\(what): U S Vt")
            }
        }
    }

    /// Closed forms for a single row (σ = ‖row‖, Vt = ±row/‖row‖) and an empty matrix.
    func testSVDOfRowVectorAndEmptyMatrix() throws {
        let row = try Tensor(shape: [1, 4], data: [1, 2, 2, 4])   // norm 5
        let f = try row.svd()
        XCTAssertEqual(f.S.count, 1)
        XCTAssertEqual(f.S[0], 5, accuracy: 5e-6)
        XCTAssertEqual(abs(f.U.data[0]), 1, accuracy: 1e-6)
        let sign = f.U.data[0] > 0 ? Float(1) : -1
        for (x, want) in zip(f.Vt.data, row.data) { XCTAssertEqual(x * sign, want / 5, accuracy: 1e-6) }
        let column = try row.reshaped([4, 1])
        XCTAssertEqual(try column.svd().S[0], 5, accuracy: 5e-6)

        let empty = try Tensor(shape: [0, 3]).svd()
        XCTAssertEqual(empty.S, [])
        XCTAssertEqual(empty.U.shape, [0, 0]); XCTAssertEqual(empty.Vt.shape, [0, 3])
        XCTAssertEqual(try Tensor(shape: [0, 3]).singularValues(), [])
    }

    func testSingularValuesMatchKnownSpectrum() throws {
        for (m, n) in [(50, 20), (20, 50)] {
            let s = KnownMatrix.steppedSpectrum(min(m, n))
            let a = try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: 7).a
            let got = try a.singularValues()
            XCTAssertLessThanOrEqual(maxRelative(got, s), 1e-5, "\(m)x\(n): \(got.prefix(6))...")
            XCTAssertEqual(got, try a.singularValuesDouble().map(Float.init))
        }
        // diag(3, -4, 1) padded to 3 x 5: the sorted absolute diagonal.
        var d = Tensor(shape: [3, 5])
        d[0, 0] = 3; d[1, 1] = -4; d[2, 2] = 1
        for (x, want) in zip(try d.singularValues(), [Float(4), 3, 1]) { XCTAssertEqual(x, want, accuracy: 1e-6) }
        // Rank one u vᵀ with ‖u‖ = 3, ‖v‖ = 5: singular values (15, 0).
        let u: [Float] = [1, 2, 2], v: [Float] = [3, 4]
        let outer = try Tensor(shape: [3, 2], data: u.flatMap { x in v.map { x * $0 } })
        let sv = try outer.singularValues()
        XCTAssertEqual(sv[0], 15, accuracy: 15e-6)
        XCTAssertEqual(sv[1], 0, accuracy: 1e-5)
    }

    func testSpectralAndFrobeniusNormsMatchClosedForms() throws {
        // [[1, 2], [3, 4]]: ‖A‖_F² = 30, det = -2, σ_1 = sqrt((F² + sqrt(F⁴ - 4 det²)) / 2).
        let a = try Tensor(shape: [2, 2], data: [1, 2, 3, 4])
        XCTAssertEqual(a.frobeniusNorm, Float(30.0.squareRoot()), accuracy: 1e-6)
        XCTAssertEqual(try a.spectralNorm(), Float(((30 + (900.0 - 16).squareRoot()) / 2).squareRoot()), accuracy: 1e-6)
        // All ones, m x n: both norms sqrt(m n).
        let ones = Tensor(shape: [6, 4], repeating: 1)
        XCTAssertEqual(ones.frobeniusNorm, Float(24.0.squareRoot()), accuracy: 1e-6)
        XCTAssertEqual(try ones.spectralNorm(), Float(24.0.squareRoot()), accuracy: 1e-5)
        // Diagonal: max |d_i| and sqrt(sum d_i²).
        var d = Tensor(shape: [4, 3])
        d[0, 0] = 3; d[1, 1] = -4; d[2, 2] = 1
        XCTAssertEqual(try d.spectralNorm(), 4, accuracy: 1e-6)
        XCTAssertEqual(d.frobeniusNorm, Float(26.0.squareRoot()), accuracy: 1e-6)
        // Known spectrum: σ_1 and sqrt(sum σ_i²).
        for (m, n) in [(40, 16), (16, 40)] {
            let s = KnownMatrix.steppedSpectrum(16)
            let k = try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: 3).a
            XCTAssertEqual(Double(try k.spectralNorm()), 10, accuracy: 1e-4)
            XCTAssertEqual(Double(k.frobeniusNorm), s.map { $0 * $0 }.reduce(0, +).squareRoot(), accuracy: 1e-5 * 12)
        }
        // Empty matrices have zero norms.
        XCTAssertEqual(try Tensor(shape: [0, 5]).spectralNorm(), 0)
        XCTAssertEqual(Tensor(shape: [0, 5]).frobeniusNorm, 0)
    }

    // MARK: randomized SVD

    /// s_i = 10 · 0.8^i: the top-k values within 1e-3 relative of the truth, and ‖A - U S Vt‖_F
    /// within 1% of the Eckart–Young optimum sqrt(Σ_{i≥k} s_i²); tall and wide.
    func testRandomizedSVDOnDecayingSpectrum() throws {
        let rank = 10
        for (m, n) in [(300, 120), (120, 300)] {
            let s = (0..<min(m, n)).map { 10 * pow(0.8, Double($0)) }
            let a = try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: 99).a
            let r = try a.randomizedSVD(rank: rank, seed: 1)
            let what = "\(m)x\(n) rank \(rank)"
            XCTAssertEqual(r.U.shape, [m, rank], what); XCTAssertEqual(r.Vt.shape, [rank, n], what)
            XCTAssertEqual(r.S.count, rank, what)
            XCTAssertLessThanOrEqual(maxRelative(r.S, Array(s.prefix(rank))), 1e-3, "\(what): S \(r.S)")
            let optimum = s.dropFirst(rank).map { $0 * $0 }.reduce(0, +).squareRoot()
            let err = relativeFrobenius(r.reconstructed(), a) * s.map { $0 * $0 }.reduce(0, +).squareRoot()
            XCTAssertLessThanOrEqual(err, 1.01 * optimum, "\(what): error \(err) vs optimum \(optimum)")
            XCTAssertGreaterThanOrEqual(err, 0.999 * optimum, "\(what): below the optimum? \(err) vs \(optimum)")
            XCTAssertLessThanOrEqual(try orthonormalityError(r.U, columns: true), 1e-5, "\(what): UᵀU")
            XCTAssertLessThanOrEqual(try orthonormalityError(r.Vt, columns: false), 1e-5, "\(what): Vt Vtᵀ")
            // Deterministic for a seed.
            let again = try a.randomizedSVD(rank: rank, seed: 1)
            XCTAssertEqual(again.S, r.S, what); XCTAssertEqual(again.U, r.U, what); XCTAssertEqual(again.Vt, r.Vt, what)
        }
    }

    /// When rank + oversample covers min(m, n) it is the exact truncated SVD.
    func testRandomizedSVDSmallMatrixIsExactTruncation() throws {
        let s = KnownMatrix.steppedSpectrum(14)
        let a = try KnownMatrix.withSpectrum(rows: 40, cols: 14, s, seed: 5).a
        let r = try a.randomizedSVD(rank: 5)
        let exact = try a.svd().truncated(to: 5)
        XCTAssertEqual(r.S, exact.S)
        XCTAssertLessThanOrEqual(maxRelative(r.S, Array(s.prefix(5))), 1e-5)
        XCTAssertEqual(r.U.shape, [40, 5]); XCTAssertEqual(r.Vt.shape, [5, 14])
        let full = try a.randomizedSVD(rank: 14)
        XCTAssertLessThanOrEqual(relativeFrobenius(full.reconstructed(), a), 1e-5)
    }

    func testRandomizedSVDRejectsBadRank() throws {
        let a = Tensor.randomNormal(shape: [12, 8], seed: 2)
        assertThrowsNaming("randomizedSVD", try a.randomizedSVD(rank: 0))
        assertThrowsNaming("randomizedSVD", try a.randomizedSVD(rank: -3))
        assertThrowsNaming("randomizedSVD", try a.randomizedSVD(rank: 9))
        assertThrowsNaming("randomizedSVD", try a.transposed().randomizedSVD(rank: 9))
        assertThrowsNaming("randomizedSVD", try Tensor(shape: [2, 2, 2]).randomizedSVD(rank: 1))
        XCTAssertEqual(try a.randomizedSVD(rank: 8).S.count, 8)
    }

    func testOtherMisuseNamesTheOperation() {
        let cube = Tensor(shape: [2, 2, 2])
        assertThrowsNaming("svd", try cube.svd())
        assertThrowsNaming("svdDouble", try cube.svdDouble())
        assertThrowsNaming("singularValues", try cube.singularValues())
        assertThrowsNaming("transposed", try cube.transposed())
        assertThrowsNaming("orthonormalColumns", try orthonormalColumns(Tensor(shape: [2, 5], repeating: 1)))
    }

    /// Householder QR gives orthonormal columns spanning the input's columns.
    func testOrthonormalColumns() throws {
        let y = Tensor.randomNormal(shape: [30, 6], seed: 4)
        let q = try orthonormalColumns(y)
        XCTAssertEqual(q.shape, [30, 6])
        XCTAssertLessThanOrEqual(try orthonormalityError(q, columns: true), 1e-5)
        // Y lies in span(Q): Q Qᵀ Y = Y.
        let projected = try q.matmul(q.matmul(y, transposeSelf: true))
        XCTAssertLessThanOrEqual(relativeFrobenius(projected, y), 1e-5)
    }
}
