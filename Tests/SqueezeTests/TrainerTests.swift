import Foundation
import Model
import MPI
import Tensor
import Training
import Compression
import TestSupport
import XCTest

/// Shared set-up for trainer tests: the tiny fixture model and the eval fixture's tokens.
enum TrainerFixture {
    static func tokens() throws -> TokenDataset {
        let ids = (try Fixtures.json("eval.json")["ids"] as! [Any]).map { UInt16(($0 as! NSNumber).intValue) }
        return TokenDataset(tokens: ids, source: Fixtures.reference("eval.json"))
    }

    static func settings(steps: Int = 20) -> DistillSettings {
        var s = DistillSettings()
        s.steps = steps; s.batch = 8; s.seq = 16; s.lr = 3e-3; s.warmup = 2; s.alpha = 0.5; s.temperature = 2
        s.microBatch = 2; s.evalTokens = 64; s.seed = 7
        return s
    }

    /// Distils a fresh copy of the tiny model (a perturbed student, the original as teacher) on `comm`.
    /// `intermediate` adds the per-block hidden-state MSE and the attention KL (weight 1 each).
    static func run(comm: Communicator, steps: Int = 20, stopAfter: Int? = nil, resumeFrom: Checkpoint? = nil,
                    checkpoint: Checkpoint? = nil, shardOptimizer: Bool = true, intermediate: Bool = false) throws -> (GPT2, [StepLog]) {
        let teacher = try GPT2.load(directory: Fixtures.tinyGPT2)
        let student = try GPT2.load(directory: resumeFrom?.modelDirectory ?? Fixtures.tinyGPT2)
        if resumeFrom == nil {
            // A different starting point than the teacher: prune half of the MLP weights.
            let lin = student.linear("h.0.mlp.c_fc")!
            lin.mask = BitMask((0..<(16 * 64)).map { Float($0 % 2) })
            student.applyMasks()
        }
        let data = try tokens()
        let (train, valid) = data.split(validationFraction: 0.2)
        var s = settings(steps: steps)
        if intermediate { s.hidden = 1; s.attention = 1 }
        var run = RunOptions()
        run.shardOptimizer = shardOptimizer
        let t = try Trainer(student: student, teacher: teacher, settings: s, train: train, valid: valid, comm: comm, run: run)
        t.checkpoint = checkpoint
        t.stopAfterStep = stopAfter
        var start = 0
        if let cp = resumeFrom { start = try t.resume(from: cp) }
        let h = try t.run(from: start)
        return (student, h)
    }
}

/// Single-process trainer behaviour: resume exactness, masks, loss going down.
final class TrainerTests: XCTestCase {
    func testResumeEqualsUninterruptedRun() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let (full, fullLog) = try TrainerFixture.run(comm: .world)
        let cp = Checkpoint(directory: dir.appendingPathComponent("cp"))
        let (_, firstHalf) = try TrainerFixture.run(comm: .world, stopAfter: 10, checkpoint: cp)
        XCTAssertEqual(firstHalf.count, 10)
        XCTAssertTrue(cp.exists)
        let (resumed, log) = try TrainerFixture.run(comm: .world, resumeFrom: cp, checkpoint: cp)
        XCTAssertEqual(log.map(\.loss), fullLog.map(\.loss), "loss history of resumed vs uninterrupted run")
        for s in full.params.slots {
            let a = resumed.params.tensor(s.name).data, b = full.params.tensor(s.name).data
            XCTAssertTrue(a == b, "weights of \(s.name) differ (max |diff| \(maxAbsDifference(a, b)))")
        }
        // The mask survived the checkpoint and pruned weights are still exactly zero.
        let w = resumed.params.tensor("h.0.mlp.c_fc.weight").data
        XCTAssertTrue(stride(from: 0, to: w.count, by: 2).allSatisfy { w[$0] == 0 })
        XCTAssertLessThan(fullLog.last!.loss, fullLog.first!.loss)
    }

    func testCheckpointRefusesDifferentSettings() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let cp = Checkpoint(directory: dir.appendingPathComponent("cp"))
        _ = try TrainerFixture.run(comm: .world, steps: 4, stopAfter: 2, checkpoint: cp)
        XCTAssertThrowsError(try TrainerFixture.run(comm: .world, steps: 5, resumeFrom: cp)) { e in
            XCTAssertTrue("\(e)".contains("different settings"), "\(e)")
        }
    }
}

/// Recipes with distillation: the gradual schedule ends at the final sparsity (also when the
/// steps are scaled), and the masks stay fixed afterwards.
final class RecipeRunnerTests: XCTestCase {
    func testGradualPruningReachesFinalSparsity() throws {
        for (scale, end) in [(1.0, 0.5), (0.5, 0.5), (1.0, 1.0)] {
            let recipe = try Recipe.parse("""
            stages:
              - prune: {sparsity: 0.5, schedule: cubic, frequency: 5, end: \(end), targets: ["h.*.mlp.*"]}
                distill: {steps: 12, batch: 4, seq: 16, lr: 1.0e-3, micro_batch: 2}
            """)
            let student = try GPT2.load(directory: Fixtures.tinyGPT2), teacher = try GPT2.load(directory: Fixtures.tinyGPT2)
            var run = RunOptions()
            run.distillScale = scale
            let runner = RecipeRunner(recipe: recipe, student: student, teacher: teacher, comm: .world, options: run)
            runner.train = try TrainerFixture.tokens()
            try runner.run()
            XCTAssertEqual(runner.history.count, Int(12 * scale))
            for name in ["h.0.mlp.c_fc", "h.1.mlp.c_proj"] {
                let d = try XCTUnwrap(student.linear(name)!.maskable), mask = try XCTUnwrap(d.mask).floats
                XCTAssertEqual(Pruning.sparsity(of: mask), 0.5, "\(name) at scale \(scale)")
                let w = student.params.tensor(d.weightName).data
                XCTAssertEqual(zip(w, mask).filter { $1 == 0 && $0 != 0 }.count, 0)
            }
            XCTAssertEqual(runner.reports.count, 4)
        }
    }
}

/// A compression run interrupted in the middle of a progressive low-rank stage and resumed ends
/// with exactly the weights of an uninterrupted run.
final class RecipeResumeTests: XCTestCase {
    func testInterruptedProgressiveRecipeResumesExactly() throws {
        let yaml = """
        stages:
          - prune: {sparsity: 0.3, targets: ["h.0.mlp.c_fc"]}
            distill: {steps: 3, batch: 4, seq: 16, lr: 1.0e-3, micro_batch: 2}
          - lowrank: {targets: ["h.*.attn.c_attn"], rank_ratio: 0.5, progressive: 3}
            distill: {steps: 9, batch: 4, seq: 16, lr: 1.0e-3, micro_batch: 2}
        """
        func runner(_ student: GPT2, checkpoint: Checkpoint?, stopAfter: Int? = nil) throws -> RecipeRunner {
            var run = RunOptions()
            run.stopAfterDistillSteps = stopAfter
            let r = RecipeRunner(recipe: try Recipe.parse(yaml), student: student, teacher: try GPT2.load(directory: Fixtures.tinyGPT2), comm: .world,
                                 options: run)
            r.train = try TrainerFixture.tokens()
            r.checkpoint = checkpoint
            return r
        }
        let full = try GPT2.load(directory: Fixtures.tinyGPT2)
        try runner(full, checkpoint: nil).run()

        let dir = try Fixtures.temporaryDirectory(self)
        let cp = Checkpoint(directory: dir.appendingPathComponent("cp"))
        // Stage 1's 3 steps + 2 of the first progressive step's 3: ranks 16 -> 13 -> 11 -> 8 must
        // continue from the checkpoint's schedule, not be recomputed from rank 13.
        let first = try runner(try GPT2.load(directory: Fixtures.tinyGPT2), checkpoint: cp, stopAfter: 5)
        XCTAssertThrowsError(try first.run()) { XCTAssertTrue("\($0)".contains("interrupted"), "\($0)") }
        let resumed = try GPT2.load(directory: cp.modelDirectory)
        try runner(resumed, checkpoint: cp).run(resume: true)
        XCTAssertEqual(resumed.params.slots.map(\.name), full.params.slots.map(\.name))
        for s in full.params.slots {
            let a = resumed.params.tensor(s.name).data, b = full.params.tensor(s.name).data
            XCTAssertTrue(a == b, "weights of \(s.name) differ (max |diff| \(maxAbsDifference(a, b)))")
        }
        XCTAssertEqual((resumed.linear("h.1.attn.c_attn")!.components[0] as! LowRankComponent).rank, 8)
    }
}
