import Compression
import Distributed
import Foundation
import MPI
import Tensor
import TestSupport
import XCTest

// MARK: - Shared with MultiRankTSQRTests

/// Test matrices and the checks of a truncated SVD against LAPACK (sgesdd of the same matrix).
enum TallSVDCheck {
    /// `rows x cols` with the power-law spectrum σ_i = (i + 1)^-0.7 (like trained weights), from
    /// seeded random orthonormal factors; the same on every rank.
    static func powerLaw(rows m: Int, cols n: Int, seed: UInt64) throws -> Tensor {
        let s = (0..<min(m, n)).map { pow(Double($0 + 1), -0.7) }
        return try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: seed).a
    }

    /// ‖A − U diag(S) Vt‖_F in Double.
    static func residual(_ a: Tensor, _ f: SVD) -> Double {
        let m = a.shape[0], n = a.shape[1], k = f.S.count
        var sum = 0.0
        var row = [Double](repeating: 0, count: k)
        for i in 0..<m {
            for p in 0..<k { row[p] = Double(f.U.data[i * k + p]) * Double(f.S[p]) }
            for j in 0..<n {
                var acc = 0.0
                for p in 0..<k { acc += row[p] * Double(f.Vt.data[p * n + j]) }
                let d = Double(a.data[i * n + j]) - acc
                sum += d * d
            }
        }
        return sum.squareRoot()
    }

    /// The Eckart–Young error of the best rank-k approximation, sqrt(Σ_{i>k} σ_i²), from `s`.
    static func eckartYoung(_ s: [Float], k: Int) -> Double {
        s.dropFirst(k).reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    }

    /// Largest |x − y| over the leading `k` columns of two `m x *` row-major matrices.
    static func maxColumnDifference(_ x: Tensor, _ y: Tensor, columns k: Int) -> Float {
        var worst: Float = 0
        for i in 0..<x.shape[0] {
            for j in 0..<k { worst = max(worst, abs(x.data[i * x.shape[1] + j] - y.data[i * y.shape[1] + j])) }
        }
        return worst
    }

    /// Asserts that `f` is a correct rank-`k` truncated SVD of `a`, against LAPACK's full `lapack`
    /// (`a.svd()`): the criteria (S within 1e-4 relative, ‖A − U_k S_k V_kᵀ‖_F within 0.1%
    /// of the Eckart–Young value), orthonormal factors, canonical signs, and, with canonical
    /// signs on both, the same leading singular vectors as LAPACK's (for `vectorColumns` pairs).
    static func check(_ f: SVD, of a: Tensor, k: Int, lapack: SVD, vectorColumns: Int, vectorTolerance: Float = 1e-3,
                      _ what: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let m = a.shape[0], n = a.shape[1]
        XCTAssertEqual(f.U.shape, [m, k], what, file: file, line: line)
        XCTAssertEqual(f.Vt.shape, [k, n], what, file: file, line: line)
        XCTAssertEqual(f.S.count, k, what, file: file, line: line)
        guard f.U.shape == [m, k], f.Vt.shape == [k, n], f.S.count == k else { return }
        XCTAssertLessThanOrEqual(maxRelative(f.S, lapack.S.prefix(k).map(Double.init)), 1e-4,
                                 "\(what): S \(f.S.prefix(3)) vs LAPACK \(lapack.S.prefix(3))", file: file, line: line)
        XCTAssertTrue(zip(f.S, f.S.dropFirst()).allSatisfy { $0 >= $1 }, "\(what): S not descending", file: file, line: line)
        let err = residual(a, f), ey = eckartYoung(lapack.S, k: k)
        if k < n {
            XCTAssertLessThanOrEqual(abs(err - ey) / ey, 1e-3, "\(what): ‖A − U_k S_k V_kᵀ‖ = \(err), Eckart–Young \(ey)",
                                     file: file, line: line)
        } else {
            XCTAssertLessThanOrEqual(err / Double(a.frobeniusNorm), 1e-5, "\(what): full reconstruction", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(try orthonormalityError(f.U, columns: true), 1e-5, "\(what): UᵀU", file: file, line: line)
        XCTAssertLessThanOrEqual(try orthonormalityError(f.Vt, columns: false), 1e-5, "\(what): Vt Vtᵀ", file: file, line: line)
        XCTAssertEqual(f.canonicalSigns().U, f.U, "\(what): signs not canonical", file: file, line: line)
        XCTAssertEqual(f.canonicalSigns().Vt, f.Vt, "\(what): signs not canonical", file: file, line: line)
        let ref = lapack.canonicalSigns()
        let p = min(vectorColumns, k)
        let vDiff = maxColumnDifference(try f.Vt.transposed(), try ref.Vt.transposed(), columns: p)
        let uDiff = maxColumnDifference(f.U, ref.U, columns: p)
        XCTAssertLessThanOrEqual(vDiff, vectorTolerance, "\(what): leading \(p) right singular vectors vs LAPACK", file: file, line: line)
        XCTAssertLessThanOrEqual(uDiff, vectorTolerance, "\(what): leading \(p) left singular vectors vs LAPACK", file: file, line: line)
    }
}

// MARK: - Single rank

/// `tallSVD` on a world of one rank (QR + SVD of R) against LAPACK's sgesdd, and its Tensor parts.
final class TSQRTests: XCTestCase {
    private func world(file: StaticString = #filePath, line: UInt = #line) -> Communicator? {
        let world = Communicator.world
        guard world.size == 1 else {
            XCTFail("TSQRTests need a world of 1 rank (plain swift test), got \(world.size)", file: file, line: line)
            return nil
        }
        return world
    }

    func testTruncatedMatchesLAPACK() throws {
        guard let world = world() else { return }
        let a = try TallSVDCheck.powerLaw(rows: 3000, cols: 96, seed: 1)
        let lapack = try a.svd()
        for precision in [SVDPrecision.double, .single] {
            let f = try tallSVD(a, rank: 24, comm: world, smallSVDPrecision: precision)
            try TallSVDCheck.check(f, of: a, k: 24, lapack: lapack, vectorColumns: 24, "3000x96 k=24 \(precision)")
        }
    }

    func testAllColumnsAndSquare() throws {
        guard let world = world() else { return }
        for (m, n) in [(1000, 64), (64, 64), (65, 64)] {
            let a = try TallSVDCheck.powerLaw(rows: m, cols: n, seed: UInt64(m + n))
            let lapack = try a.svd()
            let f = try tallSVD(a, comm: world)   // rank nil: all n
            try TallSVDCheck.check(f, of: a, k: n, lapack: lapack, vectorColumns: 16, "\(m)x\(n) all")
        }
    }

    /// A rank-deficient matrix (rank 10 of 40 columns): U's columns past the rank are still orthonormal.
    func testRankDeficient() throws {
        guard let world = world() else { return }
        let s = (0..<10).map { 1 / Double($0 + 1) }
        let a = try KnownMatrix.withSpectrum(rows: 500, cols: 40, s, seed: 9).a
        let f = try tallSVD(a, rank: 20, comm: world)
        XCTAssertLessThanOrEqual(maxRelative(Array(f.S.prefix(10)), s), 1e-5)
        XCTAssertTrue(f.S.dropFirst(10).allSatisfy { $0 < 1e-5 }, "\(f.S.dropFirst(10))")
        XCTAssertLessThanOrEqual(relativeFrobenius(f.reconstructed(), a), 1e-5)
        XCTAssertLessThanOrEqual(try orthonormalityError(f.U, columns: true), 1e-5)
        XCTAssertLessThanOrEqual(try orthonormalityError(f.Vt, columns: false), 1e-5)
    }

    func testRejectsBadInput() throws {
        guard let world = world() else { return }
        let wide = Tensor.randomNormal(shape: [10, 20], seed: 1)
        assertThrowsNaming("tallSVD", try tallSVD(wide, comm: world))
        let tall = Tensor.randomNormal(shape: [20, 10], seed: 1)
        assertThrowsNaming("tallSVD", try tallSVD(tall, rank: 0, comm: world))
        assertThrowsNaming("tallSVD", try tallSVD(tall, rank: 11, comm: world))
        assertThrowsNaming("tallSVD", try tallSVD(Tensor(shape: [200]), comm: world))
    }

    /// Q from `applyQ` on the identity is orthonormal and Q R reproduces A; Qᵀ undoes Q.
    func testHouseholderQR() throws {
        let a = Tensor.randomNormal(shape: [50, 12], seed: 3)
        let qr = try a.householderQR()
        XCTAssertEqual(qr.reflectors, 12)
        var q = [Float](repeating: 0, count: 50 * 12)
        for j in 0..<12 { q[j * 50 + j] = 1 }
        try qr.applyQ(to: &q, columns: 12)                     // column-major 50 x 12
        let qT = try Tensor(shape: [12, 50], data: q)           // row-major Qᵀ
        let qMat = try qT.transposed()
        let r = try Tensor(shape: [12, 12], data: qr.r)
        XCTAssertLessThanOrEqual(relativeFrobenius(try qMat.matmul(r), a), 1e-6)
        XCTAssertLessThanOrEqual(try orthonormalityError(qMat, columns: true), 1e-6)
        for i in 0..<12 { for j in 0..<i { XCTAssertEqual(r[i, j], 0) } }
        var back = q
        try qr.applyQ(to: &back, columns: 12, transposed: true)   // QᵀQ = I
        for j in 0..<12 { for i in 0..<50 { XCTAssertEqual(back[j * 50 + i], i == j ? 1 : 0, accuracy: 1e-6) } }
        // A row block, and a block with fewer rows than columns (R is trapezoidal).
        let block = try HouseholderQR(a, rows: 10..<15)
        XCTAssertEqual(block.rows, 5)
        XCTAssertEqual(block.reflectors, 5)
        XCTAssertEqual(block.r.count, 5 * 12)
        // More columns in c than rows (LAPACKE 3.11's own ?gemqrt workspace would overflow here).
        var wide = [Float](repeating: 0, count: 5 * 30)
        for j in 0..<5 { wide[j * 5 + j] = 1 }
        try block.applyQ(to: &wide, columns: 30)
        let q5 = try Tensor(shape: [5, 5], data: Array(wide[0..<25]))   // Q's columns, column-major = rows of Qᵀ
        XCTAssertLessThanOrEqual(try orthonormalityError(q5, columns: false), 1e-6)
        XCTAssertEqual(maxAbsDifference(Array(wide[25...]), [Float](repeating: 0, count: 125)), 0)
        XCTAssertThrowsError(try HouseholderQR(a, rows: 40..<51))
        XCTAssertThrowsError(try qr.applyQ(to: &back, columns: 11))
    }

    /// Block sizes 1, 5 (not dividing the columns) and the default 64 (> columns: clamped) agree.
    func testHouseholderQRBlockSizes() throws {
        let a = Tensor.randomNormal(shape: [40, 12], seed: 6)
        let colMajor = try a.transposed().data
        let reference = try HouseholderQR(columnMajor: colMajor, rows: 40, cols: 12)
        XCTAssertEqual(reference.blockSize, 12)
        for nb in [1, 5, 12] {
            let qr = try HouseholderQR(columnMajor: colMajor, rows: 40, cols: 12, blockSize: nb)
            XCTAssertEqual(qr.blockSize, nb)
            XCTAssertLessThanOrEqual(maxAbsDifference(qr.r, reference.r), 1e-5, "block size \(nb)")
            var c = [Float](repeating: 0, count: 40 * 3)
            for j in 0..<3 { c[j * 40 + 2 * j] = 1 }
            var d = c
            try qr.applyQ(to: &c, columns: 3)
            try reference.applyQ(to: &d, columns: 3)
            XCTAssertLessThanOrEqual(maxAbsDifference(c, d), 1e-5, "block size \(nb)")
        }
        XCTAssertThrowsError(try HouseholderQR(columnMajor: colMajor, rows: 40, cols: 12, blockSize: 0))
        let empty = try HouseholderQR(columnMajor: [Float](), rows: 0, cols: 12)
        XCTAssertEqual(empty.r, [])
    }

    /// The QR-path SVD (column-major copy) and `svd()` agree up to signs and rounding.
    func testSVDColumnMajorMatchesSVD() throws {
        for (m, n) in [(300, 40), (40, 30), (30, 40)] {
            let a = try TallSVDCheck.powerLaw(rows: m, cols: n, seed: UInt64(7 * m + n))
            let f = try a.svdColumnMajor().canonicalSigns()
            let g = try a.svd().canonicalSigns()
            let r = min(m, n)
            XCTAssertEqual(f.U.shape, [m, r])
            XCTAssertEqual(f.Vt.shape, [r, n])
            XCTAssertLessThanOrEqual(maxRelative(f.S, g.S.map(Double.init)), 1e-5, "\(m)x\(n)")
            XCTAssertLessThanOrEqual(relativeFrobenius(f.reconstructed(), a), 1e-5, "\(m)x\(n)")
            XCTAssertLessThanOrEqual(TallSVDCheck.maxColumnDifference(f.U, g.U, columns: 8), 1e-3, "\(m)x\(n)")
        }
    }

    /// The compressor's SVD paths: wte-shaped matrices go to TSQR over several ranks (also wide),
    /// square ones and anything on one rank to LAPACK, ScaLAPACK only when --scalapack-min asks;
    /// many ranks are capped for TSQR.
    func testSVDPath() {
        func path(_ m: Int, _ n: Int, _ ranks: Int, _ k: Int? = nil, scalapackMin: Int? = nil) -> SVDPath {
            Compressor.svdPath(rows: m, cols: n, count: m * n, rank: k, ranks: ranks, scalapackMinElements: scalapackMin)
        }
        XCTAssertEqual(path(50257, 768, 2, 192), .tsqr)
        XCTAssertEqual(path(768, 50257, 2, 192), .tsqr)
        XCTAssertEqual(path(50257, 768, 1, 192), .lapack)
        XCTAssertEqual(path(50257, 1600, 2), .lapack)   // full rank needs blocks 16x as tall as wide: 50257 / 1600 < 2 · 16
        XCTAssertEqual(path(50257, 1600, 2, 400), .tsqr)
        XCTAssertEqual(path(3072, 768, 2, 192), .lapack)
        XCTAssertEqual(path(3072, 3072, 2), .lapack)
        XCTAssertEqual(path(4096, 4096, 64), .lapack)
        XCTAssertEqual(path(4096, 4096, 2, scalapackMin: 4096 * 4096), .scalapack)
        XCTAssertEqual(path(4096, 4095, 2, scalapackMin: 4096 * 4096), .lapack)
        XCTAssertEqual(path(50257, 768, 64, 192), .tsqr)
        // k = n/4 needs blocks 7 times as tall as wide; k = n 16 times.
        XCTAssertEqual(tsqrRankCount(rows: 50257, cols: 768, ranks: 2, rank: 192), 2)
        XCTAssertEqual(tsqrRankCount(rows: 50257, cols: 768, ranks: 64, rank: 192), 9)
        XCTAssertEqual(tsqrRankCount(rows: 50257, cols: 768, ranks: 64), 4)
        XCTAssertEqual(tsqrRankCount(rows: 5375, cols: 768, ranks: 4, rank: 192), 0)
        XCTAssertEqual(tsqrRankCount(rows: 5376, cols: 768, ranks: 4, rank: 192), 1)
    }

    func testThinSVDDoubleAndCanonicalSigns() throws {
        let s = [4.0, 2, 1]
        let a = try KnownMatrix.withSpectrum(rows: 7, cols: 5, s + [0.5, 0.25], seed: 4).a
        let colMajor = try a.transposed().data.map(Double.init)
        let (u, sv, vt) = try thinSVD(columnMajor: colMajor, rows: 7, cols: 5)
        XCTAssertEqual(u.count, 35)
        XCTAssertEqual(vt.count, 25)
        XCTAssertLessThanOrEqual(maxRelative(sv.map(Float.init), s + [0.5, 0.25]), 1e-6)
        let f = try a.svd()
        let c = f.canonicalSigns()
        XCTAssertLessThanOrEqual(relativeFrobenius(c.reconstructed(), a), 1e-6)
        XCTAssertEqual(c.canonicalSigns().Vt, c.Vt)
        for i in 0..<5 {
            let row = c.Vt.data[(i * 5)..<(i * 5 + 5)]
            let big = row.max { abs($0) < abs($1) }!
            XCTAssertGreaterThan(big, 0, "row \(i) of Vt")
        }
    }
}
