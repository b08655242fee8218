import Distributed
import Foundation
import MPI
import Tensor
import TestSupport
import XCTest

/// `tallSVD` over all ranks (run under mpirun by scripts/test.sh, np = 2 and 4): every rank holds
/// the same matrix, works on its row block, and ends with the same factorization, which matches
/// LAPACK's sgesdd of the whole matrix and the one-rank TSQR. Collectives first, assertions after.
final class MultiRankTSQRTests: MultiRankTestCase {
    /// True when every rank holds bitwise the same values (element-wise max and min over ranks agree).
    private func identicalOnAllRanks(_ f: SVD, _ world: Communicator) throws -> Bool {
        let flat = f.S + f.U.data + f.Vt.data
        var hi = flat, lo = flat
        try world.allreduce(&hi, op: .max)
        try world.allreduce(&lo, op: .min)
        return hi == lo
    }

    /// This rank alone, as a communicator of one.
    private func soloComm(_ world: Communicator) throws -> Communicator {
        try XCTUnwrap(try world.split(color: world.rank))
    }

    func testTruncatedMatchesLAPACKAndOneRank() throws {
        guard let world = requireWorld() else { return }
        let a = try TallSVDCheck.powerLaw(rows: 3000, cols: 96, seed: 1)
        let f = try tallSVD(a, rank: 24, comm: world)
        let single = try tallSVD(a, rank: 24, comm: world, smallSVDPrecision: .single)
        let same = try identicalOnAllRanks(f, world)
        let sameSingle = try identicalOnAllRanks(single, world)
        let solo = try soloComm(world)
        let one = try tallSVD(a, rank: 24, comm: solo)   // P = 1 on each rank: QR + SVD of R

        let what = "3000x96 k=24 on \(world.size) ranks (rank \(world.rank))"
        XCTAssertTrue(same, "\(what): ranks hold different factorizations")
        XCTAssertTrue(sameSingle, "\(what), single-precision small SVD: ranks hold different factorizations")
        let lapack = try a.svd()
        try TallSVDCheck.check(f, of: a, k: 24, lapack: lapack, vectorColumns: 24, what)
        try TallSVDCheck.check(single, of: a, k: 24, lapack: lapack, vectorColumns: 24, "\(what), single")
        // The rank count changes only the rounding.
        XCTAssertLessThanOrEqual(maxRelative(f.S, one.S.map(Double.init)), 1e-5, "\(what): S vs one rank")
        XCTAssertLessThanOrEqual(maxAbsDifference(f.U.data, one.U.data), 1e-4, "\(what): U vs one rank")
        XCTAssertLessThanOrEqual(maxAbsDifference(f.Vt.data, one.Vt.data), 1e-4, "\(what): Vt vs one rank")
    }

    /// All n columns; a row count that does not divide by the rank count.
    func testAllColumnsUnevenRows() throws {
        guard let world = requireWorld() else { return }
        let a = try TallSVDCheck.powerLaw(rows: 2001, cols: 64, seed: 2)
        let f = try tallSVD(a, comm: world)
        let same = try identicalOnAllRanks(f, world)

        XCTAssertTrue(same, "ranks hold different factorizations")
        try TallSVDCheck.check(f, of: a, k: 64, lapack: try a.svd(), vectorColumns: 16, "2001x64 all on \(world.size) ranks")
    }

    /// Fewer rows per rank than columns (np = 2: 75 rows, np = 4: 37 or 38 rows for 96 columns):
    /// the R factors are trapezoidal and the stack is shorter than P·n.
    func testFewerRowsPerRankThanColumns() throws {
        guard let world = requireWorld() else { return }
        let a = try TallSVDCheck.powerLaw(rows: 150, cols: 96, seed: 3)
        let f = try tallSVD(a, rank: 40, comm: world)
        let same = try identicalOnAllRanks(f, world)

        XCTAssertTrue(same, "ranks hold different factorizations")
        try TallSVDCheck.check(f, of: a, k: 40, lapack: try a.svd(), vectorColumns: 16, "150x96 k=40 on \(world.size) ranks")
    }

    /// Ranks that pass different ranks k (or shapes) all throw, and none is left in a collective.
    func testDisagreeingRanksThrowEverywhere() throws {
        guard let world = requireWorld() else { return }
        let a = try TallSVDCheck.powerLaw(rows: 200, cols: 16, seed: 4)
        XCTAssertThrowsError(try tallSVD(a, rank: world.rank == 1 ? 8 : 4, comm: world)) {
            XCTAssertTrue("\($0)".contains("tallSVD"), "\($0)")
        }
        let b = world.rank == 0 ? Tensor.randomNormal(shape: [200, 15], seed: 5) : a
        XCTAssertThrowsError(try tallSVD(b, rank: 4, comm: world)) {
            XCTAssertTrue("\($0)".contains("different"), "\($0)")
        }
        XCTAssertEqual(try world.allreduce(1), world.size)
    }
}
