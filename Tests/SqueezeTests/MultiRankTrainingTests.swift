import Foundation
import Model
import MPI
import Tensor
import Training
import XCTest

/// Data-parallel training on 1, 2 and 4 ranks inside one mpirun: the world is split into
/// sub-communicators of size 1 and 2 (and the whole world), each trains the same 20 steps; the
/// losses and final weights must agree up to float summation order. Run by scripts/test.sh
/// under `mpirun -np 4` (the world size must be 4, else the test fails).
final class MultiRankTrainingTests: MultiRankTestCase {
    func testLossAndWeightsDoNotDependOnRankCount() throws {
        guard let world = requireWorld() else { return }
        var results: [Int: (losses: [Double], weights: [Float])] = [:]
        for n in Set([1, 2, world.size]).sorted() {
            let sub = try world.split(color: world.rank < n ? 0 : nil)
            if let sub {
                XCTAssertEqual(sub.size, n)
                let (model, log) = try TrainerFixture.run(comm: sub)
                results[n] = (log.map(\.loss), Array(model.params.values))
            }
            try world.barrier()
        }
        guard world.rank == 0 else { return }
        let base = results[1]!
        for (n, r) in results where n != 1 {
            XCTAssertEqual(r.losses.count, 20)
            for (a, b) in zip(r.losses, base.losses) { XCTAssertLessThanOrEqual(abs(a - b) / b, 1e-4, "np=\(n) loss \(a) vs np=1 \(b)") }
            let diff = maxAbsDifference(r.weights, base.weights)
            print("np=\(n) vs np=1: max loss rel diff \(zip(r.losses, base.losses).map { abs($0 - $1) / $1 }.max()!), max weight diff \(diff)")
            XCTAssertLessThanOrEqual(diff, 1e-5, "np=\(n) final weights differ from np=1 by \(diff)")
        }
    }
}
