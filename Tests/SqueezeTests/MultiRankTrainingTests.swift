import Foundation
import Model
import MPI
import Tensor
import Training
import TestSupport
import XCTest

/// Data-parallel training on 1, 2 and 4 ranks inside one mpirun: the world is split into
/// sub-communicators of size 1 and 2 (and the whole world), each trains the same 20 steps, with
/// the sharded optimizer (ZeRO-1, the default) and with the all-reduce; the losses and final
/// weights must agree up to float summation order. Run by scripts/test.sh under mpirun -np 2
/// and -np 4.
final class MultiRankTrainingTests: MultiRankTestCase {
    func testLossAndWeightsDoNotDependOnRankCount() throws {
        guard let world = requireWorld() else { return }
        var results: [String: (losses: [Double], weights: [Float])] = [:]
        for n in Set([1, 2, world.size]).sorted() {
            let sub = try world.split(color: world.rank < n ? 0 : nil)
            if let sub {
                XCTAssertEqual(sub.size, n)
                for sharded in [true, false] where n > 1 || sharded {
                    let (model, log) = try TrainerFixture.run(comm: sub, shardOptimizer: sharded)
                    results["np=\(n)\(sharded ? "" : " all-reduce")"] = (log.map(\.loss), Array(model.params.values))
                }
            }
            try world.barrier()
        }
        guard world.rank == 0 else { return }
        let base = results["np=1"]!
        XCTAssertEqual(results.count, world.size == 2 ? 3 : 5)
        for (n, r) in results where n != "np=1" {
            XCTAssertEqual(r.losses.count, 20)
            for (a, b) in zip(r.losses, base.losses) { XCTAssertLessThanOrEqual(abs(a - b) / b, 1e-4, "\(n) loss \(a) vs np=1 \(b)") }
            let diff = maxAbsDifference(r.weights, base.weights)
            print("\(n) vs np=1: max loss rel diff \(zip(r.losses, base.losses).map { abs($0 - $1) / $1 }.max()!), max weight diff \(diff)")
            XCTAssertLessThanOrEqual(diff, 1e-5, "\(n) final weights differ from np=1 by \(diff)")
        }
    }

    /// The same with the intermediate-layer terms (hidden-state MSE, attention KL): their sums are
    /// reduced over ranks like the logit terms, so the losses and weights agree too.
    func testIntermediateDistillationDoesNotDependOnRankCount() throws {
        guard let world = requireWorld() else { return }
        var results: [Int: (losses: [Double], hidden: [Double], weights: [Float])] = [:]
        for n in Set([1, world.size]).sorted() {
            if let sub = try world.split(color: world.rank < n ? 0 : nil) {
                let (model, log) = try TrainerFixture.run(comm: sub, steps: 10, intermediate: true)
                results[n] = (log.map(\.loss), log.compactMap(\.hidden), Array(model.params.values))
            }
            try world.barrier()
        }
        guard world.rank == 0, let base = results[1], let many = results[world.size] else { return }
        XCTAssertEqual(base.hidden.count, 10, "every step logs the hidden-state term")
        XCTAssertGreaterThan(base.hidden[0], 0, "the perturbed student's hidden states differ from the teacher's")
        for (a, b) in zip(many.losses, base.losses) { XCTAssertLessThanOrEqual(abs(a - b) / b, 1e-4, "np=\(world.size) loss \(a) vs np=1 \(b)") }
        for (a, b) in zip(many.hidden, base.hidden) { XCTAssertLessThanOrEqual(abs(a - b) / b, 1e-4, "np=\(world.size) hidden \(a) vs np=1 \(b)") }
        // AdamW moves every weight by about lr (3e-3) per step whatever its gradient's size, so an
        // element whose tiny gradient rounds differently on N ranks moves differently: the weights
        // agree to a fraction of one step, while the losses and hidden terms above agree to 1e-4.
        XCTAssertLessThanOrEqual(maxAbsDifference(many.weights, base.weights), 1e-3)
    }

    /// A sharded checkpoint (moments gathered to rank 0 in flat order) resumes exactly on the same
    /// ranks, and on one rank up to summation order.
    func testShardedCheckpointResumes() throws {
        guard let world = requireWorld() else { return }
        // Every rank needs the same directory: rank 0 makes it and sends its path.
        var path = world.rank == 0 ? FileManager.default.temporaryDirectory.appendingPathComponent("squeeze-zero-\(UUID().uuidString)").path : ""
        try world.broadcast(&path, root: 0)
        defer { if world.rank == 0 { try? FileManager.default.removeItem(atPath: path) } }
        let cp = Checkpoint(directory: URL(fileURLWithPath: path).appendingPathComponent("cp"))
        let (full, fullLog) = try TrainerFixture.run(comm: world)
        _ = try TrainerFixture.run(comm: world, stopAfter: 10, checkpoint: cp)
        try world.barrier()
        let (resumed, log) = try TrainerFixture.run(comm: world, resumeFrom: cp)
        var single: (GPT2, [StepLog])?
        if let one = try world.split(color: world.rank == 0 ? 0 : nil) { single = try TrainerFixture.run(comm: one, resumeFrom: cp) }
        try world.barrier()
        XCTAssertEqual(log.map(\.loss), fullLog.map(\.loss), "resumed on the same ranks")
        XCTAssertEqual(Array(resumed.params.values), Array(full.params.values))
        if let (m, l) = single {
            for (a, b) in zip(l.map(\.loss), fullLog.map(\.loss)) { XCTAssertLessThanOrEqual(abs(a - b) / b, 1e-4, "resumed on one rank") }
            XCTAssertLessThanOrEqual(maxAbsDifference(Array(m.params.values), Array(full.params.values)), 1e-5)
        }
    }
}
