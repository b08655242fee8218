import Foundation
import MPI
import XCTest

/// Every `Communicator` operation on a world of one rank (plain `swift test`, no mpirun):
/// collectives are identities, misuse throws errors that name the call.
/// The multi-rank behaviour is in MultiRankTests.swift (run under mpirun by scripts/test.sh).
final class CommunicatorTests: XCTestCase {
    /// The world, which these tests require to have exactly one rank.
    private func singleRankWorld(file: StaticString = #filePath, line: UInt = #line) -> Communicator? {
        let world = Communicator.world
        guard world.size == 1 else {
            XCTFail("CommunicatorTests need a world of 1 rank (plain swift test), got \(world.size)", file: file, line: line)
            return nil
        }
        return world
    }

    func testWorldIsOneRank() throws {
        guard let world = singleRankWorld() else { return }
        XCTAssertEqual(world.rank, 0)
        XCTAssertTrue(world.isRoot)
        XCTAssertTrue(Runtime.isInitialized)
        let t0 = Runtime.wtime()
        try world.barrier()
        XCTAssertGreaterThanOrEqual(Runtime.wtime(), t0)
    }

    func testAllreduceIsIdentity() throws {
        guard let world = singleRankWorld() else { return }
        for op in [ReduceOp.sum, .max, .min] {
            var f: [Float] = [1.5, -2, 3e7, 0]
            try world.allreduce(&f, op: op)
            XCTAssertEqual(f, [1.5, -2, 3e7, 0], "\(op)")
            var d: [Double] = [0.1, -1e300, 42]
            try world.allreduce(&d, op: op)
            XCTAssertEqual(d, [0.1, -1e300, 42], "\(op)")
            var i: [Int] = [Int.max, Int.min, 7]
            try world.allreduce(&i, op: op)
            XCTAssertEqual(i, [Int.max, Int.min, 7], "\(op)")
            var i32: [Int32] = [-5, 9]
            try world.allreduce(&i32, op: op)
            XCTAssertEqual(i32, [-5, 9], "\(op)")
            XCTAssertEqual(try world.allreduce(Float(2.5), op: op), 2.5)
            XCTAssertEqual(try world.allreduce(-0.25, op: op), -0.25)
            XCTAssertEqual(try world.allreduce(123, op: op), 123)
        }
        var buffer: [Float] = [1, 2, 3]
        try buffer.withUnsafeMutableBufferPointer { try world.allreduce($0, op: .sum) }
        try buffer.withUnsafeMutableBufferPointer { try world.allreduceUnchecked($0, op: .max) }
        XCTAssertEqual(buffer, [1, 2, 3])
        var empty: [Double] = []
        try world.allreduce(&empty)
        XCTAssertEqual(empty, [])
    }

    func testBroadcastIsIdentity() throws {
        guard let world = singleRankWorld() else { return }
        var f: [Float] = [1, 2, 3]
        try world.broadcast(&f, root: 0)
        XCTAssertEqual(f, [1, 2, 3])
        var i: [Int] = [4, 5]
        try world.broadcast(&i)
        XCTAssertEqual(i, [4, 5])
        var empty: [Double] = []
        try world.broadcast(&empty)
        XCTAssertEqual(empty, [])
        var bytes: [UInt8] = [0, 255, 7]
        try world.broadcast(bytes: &bytes)
        XCTAssertEqual(bytes, [0, 255, 7])
        var s = "héllo, wörld"
        try world.broadcast(&s)
        XCTAssertEqual(s, "héllo, wörld")
        var d: [Double] = [1.25, 2.5]
        try d.withUnsafeMutableBufferPointer { try world.broadcast($0, root: 0) }
        XCTAssertEqual(d, [1.25, 2.5])
    }

    func testAllgatherAndAllgathervAreIdentity() throws {
        guard let world = singleRankWorld() else { return }
        XCTAssertEqual(try world.allgather([Float(1), 2, 3]), [1, 2, 3])
        XCTAssertEqual(try world.allgather([7]), [7])
        XCTAssertEqual(try world.allgather([Double]()), [])
        XCTAssertEqual(try world.allgatherv([0.5, 1.5]), [[0.5, 1.5]])
        XCTAssertEqual(try world.allgatherv([Int]()), [[]])
        XCTAssertEqual(try world.allgatherv([Float(9)]), [[9]])
    }

    func testSplit() throws {
        guard let world = singleRankWorld() else { return }
        let sub = try XCTUnwrap(try world.split(color: 0))
        XCTAssertEqual(sub.rank, 0)
        XCTAssertEqual(sub.size, 1)
        XCTAssertEqual(try sub.allreduce(5), 5)
        try sub.barrier()
        let keyed = try XCTUnwrap(try world.split(color: 3, key: 10))
        XCTAssertEqual(keyed.size, 1)
        XCTAssertNil(try world.split(color: nil))
        let shared = try world.splitShared()
        XCTAssertEqual(shared.size, 1)
        XCTAssertEqual(shared.rank, 0)
    }

    func testIallreduceAndWait() throws {
        guard let world = singleRankWorld() else { return }
        var a: [Float] = [1, 2, 3]
        var b: [Int] = [4, 5]
        try a.withUnsafeMutableBufferPointer { pa in
            try b.withUnsafeMutableBufferPointer { pb in
                let r1 = try world.iallreduce(pa, op: .sum)
                let r2 = try world.iallreduce(pb, op: .max)
                XCTAssertTrue(try r2.test())
                try r1.wait()
                try r2.wait()
                try r1.wait()   // waiting twice is harmless
            }
        }
        XCTAssertEqual(a, [1, 2, 3])
        XCTAssertEqual(b, [4, 5])
    }

    func testMisuseThrowsErrorsNamingTheCall() throws {
        guard let world = singleRankWorld() else { return }
        var f: [Float] = [1]
        assertUsage("broadcast", try world.broadcast(&f, root: 1))
        assertUsage("broadcast", try world.broadcast(&f, root: -1))
        assertUsage("broadcast", try f.withUnsafeMutableBufferPointer { try world.broadcast($0, root: 2) })
        var s = "x"
        assertUsage("broadcast", try world.broadcast(&s, root: 1))
        assertUsage("split", try world.split(color: -1))
        // The world is still usable afterwards.
        try world.barrier()
        XCTAssertEqual(try world.allreduce(1), 1)
    }

    func testErrorDescriptions() {
        XCTAssertEqual(MPIError.usage("broadcast", reason: "root 3 is bad").description, "broadcast: root 3 is bad")
        let call = MPIError.call("MPI_Bcast", code: 5, message: "MPI_ERR_COUNT: invalid count argument")
        XCTAssertTrue(call.description.contains("MPI_Bcast"))
        XCTAssertTrue(call.description.contains("invalid count"))
    }

    /// Asserts `expression` throws `MPIError.usage` naming `call`.
    private func assertUsage<T>(_ call: String, _ expression: @autoclosure () throws -> T,
                                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), "expected \(call) to throw", file: file, line: line) { error in
            guard case let .usage(name, _)? = error as? MPIError else {
                return XCTFail("expected MPIError.usage, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(name, call, file: file, line: line)
            XCTAssertTrue(String(describing: error).contains(call), "\(error)", file: file, line: line)
        }
    }
}
