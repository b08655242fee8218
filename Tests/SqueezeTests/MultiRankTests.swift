import Distributed
import Foundation
import MPI
import Tensor
import XCTest

// Multi-rank tests: run only under mpirun by scripts/test.sh (plain `swift test` skips them with
// `--skip MultiRank`). Every rank runs the same tests in the same order, so collectives line up.
// Rules that keep a failure on one rank from hanging the others:
//   - assertions come after the collectives of a test, and nothing that can throw on only some
//     ranks sits between two collectives (count mismatches throw on every rank by design);
//   - a watchdog per test exits the process with status 97 (mpirun then ends the whole job) if a
//     test does not finish within SQUEEZE_TEST_WATCHDOG seconds (default 300); scripts/test.sh
//     also wraps mpirun in `timeout`.

/// Base class: checks the world size against SQUEEZE_TEST_NP and arms the watchdog.
class MultiRankTestCase: XCTestCase {
    private var watchdog: DispatchWorkItem?

    override func setUp() {
        super.setUp()
        let world = Communicator.world
        let name = self.name, rank = world.rank
        let env = ProcessInfo.processInfo.environment["SQUEEZE_TEST_WATCHDOG"]
        let seconds = env.flatMap(Double.init) ?? 300
        let item = DispatchWorkItem {
            fputs("\(name): still running after \(Int(seconds)) s on rank \(rank) (a rank is probably stuck in a collective); exiting so mpirun ends the job\n", stderr)
            _exit(97)
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds, execute: item)
        watchdog = item
    }

    override func tearDown() {
        watchdog?.cancel()
        watchdog = nil
        super.tearDown()
    }

    /// The world, if its size is the `SQUEEZE_TEST_NP` this run was started with (>= 2); fails otherwise.
    func requireWorld(file: StaticString = #filePath, line: UInt = #line) -> Communicator? {
        let world = Communicator.world
        guard let text = ProcessInfo.processInfo.environment["SQUEEZE_TEST_NP"] else {
            XCTFail("SQUEEZE_TEST_NP is not set: multi-rank tests run under mpirun from scripts/test.sh (world size here is \(world.size))",
                    file: file, line: line)
            return nil
        }
        guard let want = Int(text), want >= 2 else {
            XCTFail("SQUEEZE_TEST_NP must be an integer >= 2, got \"\(text)\"", file: file, line: line)
            return nil
        }
        guard world.size == want else {
            XCTFail("expected a world of \(want) ranks (SQUEEZE_TEST_NP), got \(world.size)", file: file, line: line)
            return nil
        }
        return world
    }
}

/// Communicator collectives and point-to-point on n ranks with known results.
final class MultiRankCommunicatorTests: MultiRankTestCase {
    func testAllreduceSumMaxMin() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank, tri = n * (n + 1) / 2
        let count = 10_007   // past the eager limit of the shared-memory transport
        let idx = Array(0..<count)
        var ints = idx.map { (r + 1) * $0 }, intsMax = ints, intsMin = ints
        var doubles = idx.map { Double((r + 1) * $0) }, doublesMax = doubles
        var floats = idx.map { Float((r + 1) * $0) }, floatsMax = floats
        var int32s = idx.map { Int32((r + 1) * $0) }
        try world.allreduce(&ints, op: .sum)
        try world.allreduce(&intsMax, op: .max)
        try world.allreduce(&intsMin, op: .min)
        try world.allreduce(&doubles, op: .sum)
        try world.allreduce(&doublesMax, op: .max)
        try world.allreduce(&floats, op: .sum)
        try world.allreduce(&floatsMax, op: .max)
        try world.allreduce(&int32s, op: .sum)
        var unchecked = idx.map { Float((r + 1) * $0) }
        try unchecked.withUnsafeMutableBufferPointer { try world.allreduceUnchecked($0, op: .sum) }
        let scalarSum = try world.allreduce(r + 1)
        let scalarMax = try world.allreduce(r + 1, op: .max)
        let scalarMin = try world.allreduce(r + 1, op: .min)
        let doubleSum = try world.allreduce(0.5 * Double(r + 1))
        let floatMax = try world.allreduce(Float(r) - 0.25, op: .max)

        XCTAssertEqual(ints, idx.map { $0 * tri })
        XCTAssertEqual(intsMax, idx.map { $0 * n })
        XCTAssertEqual(intsMin, idx)
        XCTAssertEqual(doubles, idx.map { Double($0 * tri) })
        XCTAssertEqual(doublesMax, idx.map { Double($0 * n) })
        XCTAssertEqual(floats, idx.map { Float($0 * tri) })      // exact: integers below 2^24
        XCTAssertEqual(floatsMax, idx.map { Float($0 * n) })
        XCTAssertEqual(int32s, idx.map { Int32($0 * tri) })
        XCTAssertEqual(unchecked, idx.map { Float($0 * tri) })
        XCTAssertEqual(scalarSum, tri)
        XCTAssertEqual(scalarMax, n)
        XCTAssertEqual(scalarMin, 1)
        XCTAssertEqual(doubleSum, 0.5 * Double(tri))
        XCTAssertEqual(floatMax, Float(n - 1) - 0.25)
    }

    /// The traffic counter follows the α-β model's per-rank volumes, collective by collective.
    func testTrafficBytesFollowTheModel() throws {
        guard let world = requireWorld() else { return }
        let n = Double(world.size), ring = (n - 1) / n
        func moved(_ body: () throws -> Void) rethrows -> Int {
            let before = Communicator.trafficBytes
            try body()
            return Communicator.trafficBytes - before
        }
        var floats = [Float](repeating: 1, count: 12_000)
        XCTAssertEqual(try moved { try world.allreduce(&floats) }, Int(48_000 * 2 * ring))
        XCTAssertEqual(try moved { try floats.withUnsafeMutableBufferPointer { try world.broadcast($0, root: 0) } }, 48_000)
        XCTAssertEqual(try moved { _ = try world.allgather([Double](repeating: 0, count: 100)) }, Int(Double(800 * world.size) * ring))
        let counts = [Int](repeating: 1000, count: world.size)
        var send = [Float](repeating: 1, count: 1000 * world.size), recv = [Float](repeating: 0, count: 1000)
        let rs = try moved {
            try send.withUnsafeBufferPointer { s in try recv.withUnsafeMutableBufferPointer { r in
                try world.ireduceScatter(send: s.baseAddress!, recv: r.baseAddress!, counts: counts).wait() } }
        }
        XCTAssertEqual(rs, Int(Double(4000 * world.size) * ring))
        XCTAssertEqual(recv, [Float](repeating: Float(world.size), count: 1000))
    }

    func testBroadcastFromEveryRoot() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank
        for root in 0..<n {
            let want = (0..<(root + 3)).map { Double(root * 100 + $0) + 0.5 }
            // Non-roots start with arrays of another length: broadcast resizes them.
            var doubles = r == root ? want : [Double](repeating: -1, count: r + 1)
            try world.broadcast(&doubles, root: root)
            var ints = r == root ? want.map { Int($0) } : []
            try world.broadcast(&ints, root: root)
            var text = r == root ? "from root \(root) ✓" : "rank \(r)"
            try world.broadcast(&text, root: root)
            var bytes: [UInt8] = r == root ? [UInt8(root), 0, 255] : []
            try world.broadcast(bytes: &bytes, root: root)
            var fixed: [Float] = r == root ? [Float(root), 1, 2, 3] : [-1, -1, -1, -1]
            try fixed.withUnsafeMutableBufferPointer { try world.broadcast($0, root: root) }

            XCTAssertEqual(doubles, want, "root \(root)")
            XCTAssertEqual(ints, want.map { Int($0) }, "root \(root)")
            XCTAssertEqual(text, "from root \(root) ✓")
            XCTAssertEqual(bytes, [UInt8(root), 0, 255])
            XCTAssertEqual(fixed, [Float(root), 1, 2, 3])
        }
    }

    func testAllgatherAndAllgathervWithRankDependentLengths() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank
        let ints = try world.allgather([r * 10, r * 10 + 1])
        let floats = try world.allgather([Float(r) + 0.5])
        let empty = try world.allgather([Double]())
        // Rank r contributes r elements (rank 0 none) and 2r + 1 elements.
        let ragged = try world.allgatherv((0..<r).map { Double(r) + Double($0) / 10 })
        let odd = try world.allgatherv((0..<(2 * r + 1)).map { Float(r * 1000 + $0) })

        XCTAssertEqual(ints, (0..<n).flatMap { [$0 * 10, $0 * 10 + 1] })
        XCTAssertEqual(floats, (0..<n).map { Float($0) + 0.5 })
        XCTAssertEqual(empty, [])
        XCTAssertEqual(ragged.count, n)
        XCTAssertEqual(odd.count, n)
        for q in 0..<min(n, ragged.count, odd.count) {
            XCTAssertEqual(ragged[q], (0..<q).map { Double(q) + Double($0) / 10 }, "rank \(q)'s part")
            XCTAssertEqual(odd[q], (0..<(2 * q + 1)).map { Float(q * 1000 + $0) }, "rank \(q)'s part")
        }
    }

    func testSplitEvenOddAndExclusionAndKeys() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank
        let parity = try XCTUnwrap(try world.split(color: r % 2))
        let paritySum = try parity.allreduce(r)
        let parityMembers = try parity.allgather([r])
        let withoutZero = try world.split(color: r == 0 ? nil : 1)
        let reversed = try XCTUnwrap(try world.split(color: 0, key: n - r))
        let reversedMembers = try reversed.allgather([r])
        let withoutZeroSum = try withoutZero?.allreduce(1)
        try world.barrier()

        let mine = (0..<n).filter { $0 % 2 == r % 2 }
        XCTAssertEqual(parity.size, mine.count)
        XCTAssertEqual(parity.size, r % 2 == 0 ? (n + 1) / 2 : n / 2)
        XCTAssertEqual(parity.rank, r / 2)
        XCTAssertEqual(paritySum, mine.reduce(0, +))
        XCTAssertEqual(parityMembers, mine)
        if r == 0 {
            XCTAssertNil(withoutZero)
        } else {
            XCTAssertEqual(withoutZero?.size, n - 1)
            XCTAssertEqual(withoutZero?.rank, r - 1)
            XCTAssertEqual(withoutZeroSum, n - 1)
        }
        XCTAssertEqual(reversed.size, n)
        XCTAssertEqual(reversed.rank, n - 1 - r)
        XCTAssertEqual(reversedMembers, Array((0..<n).reversed()))
    }

    /// Several non-blocking all-reduces in flight at once, with a blocking one between them.
    func testIallreduceOverlapping() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank, tri = n * (n + 1) / 2
        let count = 50_000
        var a = (0..<count).map { Float((r + 1) * ($0 % 1000)) }
        var b = (0..<100).map { r * $0 }
        var c = (0..<count).map { Double(r + 1) * Double($0) }
        var blocking = 0
        var polled = false
        try a.withUnsafeMutableBufferPointer { pa in
            try b.withUnsafeMutableBufferPointer { pb in
                try c.withUnsafeMutableBufferPointer { pc in
                    let r1 = try world.iallreduce(pa, op: .sum)
                    let r2 = try world.iallreduce(pb, op: .max)
                    blocking = try world.allreduce(r + 1)
                    let r3 = try world.iallreduce(pc, op: .sum)
                    while !(try r2.test()) {}
                    polled = true
                    try r3.wait()
                    try r1.wait()
                    try r2.wait()
                }
            }
        }
        XCTAssertTrue(polled)
        XCTAssertEqual(blocking, tri)
        XCTAssertEqual(a, (0..<count).map { Float(tri * ($0 % 1000)) })
        XCTAssertEqual(b, (0..<100).map { (n - 1) * $0 })
        XCTAssertEqual(c, (0..<count).map { Double(tri) * Double($0) })
    }

    /// Rank 0 passes 3 elements, the others 4: every checked collective throws `MPIError.usage`
    /// naming itself on every rank (and returns, rather than hanging), and the world stays usable.
    func testMismatchedCountsThrowUsageOnEveryRank() throws {
        guard let world = requireWorld() else { return }
        let n = world.size, r = world.rank
        let count = r == 0 ? 3 : 4
        func outcome(_ call: String, _ body: () throws -> Void) -> String? {
            do {
                try body()
                return "\(call) did not throw on rank \(r)"
            } catch let error as MPIError {
                guard case let .usage(name, reason) = error else { return "\(call): expected MPIError.usage, got \(error)" }
                guard name == call, error.description.contains(call) else { return "\(call): error names \(name): \(error)" }
                guard reason.contains("different element counts") else { return "\(call): unexpected reason \(reason)" }
                return nil
            } catch {
                return "\(call): expected MPIError.usage, got \(error)"
            }
        }
        var floats = [Float](repeating: 1, count: count)
        var doubles = [Double](repeating: 1, count: count)
        var problems: [String?] = []
        problems.append(outcome("allreduce") { try world.allreduce(&floats) })
        problems.append(outcome("allreduce") { try doubles.withUnsafeMutableBufferPointer { try world.allreduce($0, op: .max) } })
        problems.append(outcome("broadcast") { try floats.withUnsafeMutableBufferPointer { try world.broadcast($0, root: n - 1) } })
        problems.append(outcome("allgather") { _ = try world.allgather(doubles) })
        // Every rank learns how many ranks saw every expected error; the world still works.
        let good = try world.allreduce(problems.allSatisfy { $0 == nil } ? 1 : 0)
        let sum = try world.allreduce(1)

        for p in problems.compactMap({ $0 }) { XCTFail(p) }
        XCTAssertEqual(good, n, "ranks that saw MPIError.usage from every mismatched call")
        XCTAssertEqual(sum, n)
        XCTAssertEqual(floats, [Float](repeating: 1, count: count), "buffers untouched by a rejected call")
    }

    /// Invalid roots and peers throw the same `MPIError.usage` on every rank without communicating.
    func testInvalidArgumentsThrowOnEveryRank() throws {
        guard let world = requireWorld() else { return }
        let n = world.size
        var f: [Float] = [1, 2]
        XCTAssertThrowsError(try world.broadcast(&f, root: n)) { XCTAssertTrue("\($0)".contains("broadcast"), "\($0)") }
        XCTAssertThrowsError(try world.split(color: -2)) { XCTAssertTrue("\($0)".contains("split"), "\($0)") }
        XCTAssertEqual(try world.allreduce(1), n)
    }
}

/// `scalapackSVD` on a near-square BLACS grid over all ranks against LAPACK on rank 0.
final class MultiRankScaLAPACKTests: MultiRankTestCase {
    /// Shapes: tall, wide, and a row count that is not a multiple of the block size.
    static let shapes = [(200, 120), (120, 200), (257, 64)]

    /// A matrix with the spectrum 10 ... 0.5 (geometric), seeded by its shape.
    static func matrix(_ m: Int, _ n: Int) throws -> (a: Tensor, s: [Double]) {
        let s = KnownMatrix.geometric(min(m, n), from: 10, to: 0.5)
        return (try KnownMatrix.withSpectrum(rows: m, cols: n, s, seed: UInt64(m * 1000 + n)).a, s)
    }

    /// Runs `scalapackSVD` (rank 0 holds the matrix) and checks the result on rank 0 against
    /// LAPACK, the known spectrum, orthonormality and reconstruction.
    private func check(_ m: Int, _ n: Int, precision: SVDPrecision, blockSize: Int = 64, world: Communicator,
                       file: StaticString = #filePath, line: UInt = #line) throws {
        let input = world.rank == 0 ? try Self.matrix(m, n) : nil
        let result = try scalapackSVD(input?.a, rows: m, cols: n, blockSize: blockSize, precision: precision)
        let what = "\(m)x\(n) \(precision) block \(blockSize) on \(world.size) ranks"
        guard let (a, s) = input else {
            XCTAssertNil(result, "\(what): non-root ranks get nil", file: file, line: line)
            return
        }
        guard let r = result else { return XCTFail("\(what): no result on rank 0", file: file, line: line) }
        let k = min(m, n)
        XCTAssertEqual(r.U.shape, [m, k], what, file: file, line: line)
        XCTAssertEqual(r.Vt.shape, [k, n], what, file: file, line: line)
        XCTAssertEqual(r.S.count, k, what, file: file, line: line)
        guard r.U.shape == [m, k], r.Vt.shape == [k, n], r.S.count == k else { return }
        let lapack = try a.svd()
        XCTAssertLessThanOrEqual(maxRelative(r.S, lapack.S.map(Double.init)), 1e-5,
                                 "\(what): S vs LAPACK \(r.S.prefix(4)) / \(lapack.S.prefix(4))", file: file, line: line)
        if precision == .double {
            XCTAssertLessThanOrEqual(maxRelative(r.S, try a.singularValuesDouble()), 1e-6,
                                     "\(what): S vs dgesdd", file: file, line: line)
        }
        XCTAssertLessThanOrEqual(maxRelative(r.S, s), 1e-5, "\(what): S vs the known spectrum", file: file, line: line)
        XCTAssertLessThanOrEqual(relativeFrobenius(r.reconstructed(), a), 1e-4, "\(what): U S Vt", file: file, line: line)
        XCTAssertLessThanOrEqual(try orthonormalityError(r.U, columns: true), 1e-4, "\(what): UᵀU", file: file, line: line)
        XCTAssertLessThanOrEqual(try orthonormalityError(r.Vt, columns: false), 1e-4, "\(what): Vt Vtᵀ", file: file, line: line)
    }

    func testSinglePrecisionMatchesLAPACK() throws {
        guard let world = requireWorld() else { return }
        for (m, n) in Self.shapes { try check(m, n, precision: .single, world: world) }
        // Small blocks: many blocks per rank in both grid dimensions.
        try check(200, 120, precision: .single, blockSize: 16, world: world)
        try check(120, 200, precision: .single, blockSize: 7, world: world)
    }

    func testDoublePrecisionMatchesLAPACK() throws {
        guard let world = requireWorld() else { return }
        for (m, n) in Self.shapes { try check(m, n, precision: .double, world: world) }
        try check(257, 64, precision: .double, blockSize: 16, world: world)
    }

    /// With `broadcastResult`, every rank holds the same (bitwise) factorization, and it is correct.
    func testBroadcastResultIsIdenticalOnAllRanks() throws {
        guard let world = requireWorld() else { return }
        for (m, n) in [(257, 64), (120, 200)] {
            for precision in [SVDPrecision.single, .double] {
                let input = world.rank == 0 ? try Self.matrix(m, n) : nil
                let result = try scalapackSVD(input?.a, rows: m, cols: n, precision: precision, broadcastResult: true)
                // Element-wise max and min over ranks agree iff every rank holds the same numbers.
                let flat = result.map { $0.S + $0.U.data + $0.Vt.data } ?? []
                var hi = flat, lo = flat
                try world.allreduce(&hi, op: .max)
                try world.allreduce(&lo, op: .min)

                let what = "\(m)x\(n) \(precision) rank \(world.rank)"
                let k = min(m, n)
                guard let r = result else { XCTFail("\(what): broadcastResult gave nil"); continue }
                XCTAssertEqual(r.U.shape, [m, k], what)
                XCTAssertEqual(r.Vt.shape, [k, n], what)
                XCTAssertEqual(flat.count, k + m * k + k * n, what)
                XCTAssertTrue(hi == lo, "\(what): ranks hold different factorizations")
                if let (a, s) = input {
                    XCTAssertLessThanOrEqual(maxRelative(r.S, s), 1e-5, "\(what): S")
                    XCTAssertLessThanOrEqual(relativeFrobenius(r.reconstructed(), a), 1e-4, "\(what): U S Vt")
                }
            }
        }
    }

    /// A root other than 0 is rejected on every rank (no rank enters the collective).
    func testNonZeroRootIsRejectedOnEveryRank() throws {
        guard let world = requireWorld() else { return }
        let a = Tensor.randomNormal(shape: [8, 6], seed: 1)
        XCTAssertThrowsError(try scalapackSVD(a, rows: 8, cols: 6, root: 1)) {
            XCTAssertTrue("\($0)".contains("scalapackSVD"), "\($0)")
        }
        XCTAssertEqual(try world.allreduce(1), world.size)
    }

    /// A wrong matrix on root only is reported on every rank, and no rank is left inside BLACS.
    func testWrongShapeOnRootThrowsOnEveryRank() throws {
        guard let world = requireWorld() else { return }
        let a = Tensor.randomNormal(shape: [8, 6], seed: 1)
        XCTAssertThrowsError(try scalapackSVD(world.rank == 0 ? a : nil, rows: 6, cols: 8)) {
            XCTAssertTrue("\($0)".contains("scalapackSVD"), "\($0)")
        }
        XCTAssertEqual(try world.allreduce(1), world.size)
    }

    func testProcessGridIsNearSquare() throws {
        guard let world = requireWorld() else { return }
        let grid = try ProcessGrid()
        let cells = try world.allgather([grid.myRow * grid.cols + grid.myCol])
        XCTAssertTrue(grid.contains)
        XCTAssertEqual(grid.rows * grid.cols, world.size)
        XCTAssertLessThanOrEqual(grid.rows, grid.cols)
        XCTAssertEqual(Set(cells).count, world.size, "every rank owns a distinct grid cell: \(cells)")
        let shapes = [1, 2, 3, 4, 6, 7, 12].map { ProcessGrid.shape(forSize: $0) }
        XCTAssertEqual(shapes.map { [$0.rows, $0.cols] }, [[1, 1], [1, 2], [1, 3], [2, 2], [2, 3], [1, 7], [3, 4]])
    }
}
