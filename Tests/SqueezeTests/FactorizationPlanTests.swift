import XCTest
@testable import Compression
import Distributed
import Model

/// The factorization plan against the planner it mirrors and closed-form makespans.
final class FactorizationPlanTests: XCTestCase {
    let distil = GPT2Config(vocabSize: 50257, nPositions: 1024, nEmbd: 768, nLayer: 6, nHead: 12)
    let lowrank = "stages:\n  - lowrank: {targets: [\"wte\", \"h.*.attn.*\", \"h.*.mlp.*\"], rank_ratio: 0.25}\n"

    func testOneRankRunsEverythingWithLAPACK() throws {
        let plan = try FactorizationPlan.make(recipe: try Recipe.parse(lowrank), config: distil, ranks: 1, scalapackMinElements: nil,
                                              secondsPerUnit: 1e-9)
        XCTAssertEqual(plan.jobs.count, 1 + 6 * 4)
        XCTAssertTrue(plan.jobs.allSatisfy { $0.path == .lapack && $0.owner == 0 })
        // wte (tall: LAPACK's QR path, 0.4x) + per block 768x2304, 768x768, 768x3072, 3072x768.
        let units = 0.4 * 50257 * 768 * 768 + 6 * (0.4 * 768 * 2304 * 768 + 768.0 * 768 * 768 + 2 * 0.4 * 768 * 3072 * 768)
        XCTAssertEqual(plan.makespan, units * 1e-9, accuracy: 1e-9)
        XCTAssertEqual(plan.ideal, plan.makespan, accuracy: 1e-12)
    }

    func testTwoRanksTakeTSQRForTheEmbeddingAndSpreadTheRestByCost() throws {
        let plan = try FactorizationPlan.make(recipe: try Recipe.parse(lowrank), config: distil, ranks: 2, scalapackMinElements: nil,
                                              secondsPerUnit: 1e-9)
        let wte = try XCTUnwrap(plan.jobs.first { $0.layer == "wte" })
        XCTAssertEqual(wte.path, .tsqr)
        XCTAssertNil(wte.owner)
        XCTAssertEqual(tsqrRankCount(rows: 50257, cols: 768, ranks: 2, rank: 192), 2)
        // TSQR on 2 ranks: 0.15·(m/2)·n² + 2·n³ units.
        XCTAssertEqual(wte.seconds, 1e-9 * (0.15 * 50257 / 2 * 768 * 768 + 2 * 768.0 * 768 * 768), accuracy: 1e-9)
        let blocks = plan.jobs.filter { $0.layer != "wte" }
        XCTAssertEqual(blocks.map { $0.owner! }, planJobs(costs: blocks.map { FactorizationPlan.lapackUnits($0.rows, $0.cols) }, ranks: 2))
        var load = [0.0, 0.0]
        for j in blocks { load[j.owner!] += j.seconds }
        XCTAssertEqual(plan.makespan, load.max()! + wte.seconds, accuracy: 1e-12)
        XCTAssertEqual(plan.ideal, plan.jobs.reduce(0) { $0 + $1.singleRankSeconds } / 2, accuracy: 1e-12)
        XCTAssertLessThan(plan.makespan, try FactorizationPlan.make(recipe: try Recipe.parse(lowrank), config: distil, ranks: 1,
                                                                    scalapackMinElements: nil, secondsPerUnit: 1e-9).makespan / 1.8)
    }

    func testScalapackMinSendsLargeMatricesToScaLAPACK() throws {
        let plan = try FactorizationPlan.make(recipe: try Recipe.parse(lowrank), config: distil, ranks: 2, scalapackMinElements: 20_000_000,
                                              secondsPerUnit: 1e-9)
        XCTAssertEqual(plan.jobs.filter { $0.path == .scalapack }.map(\.layer), ["wte"])
        XCTAssertTrue(plan.describe().contains("scalapack"))
    }

    func testKroneckerLayersTakeNoLaterSVDJobAndProgressiveStepsRepeat() throws {
        let recipe = try Recipe.parse("""
        stages:
          - kronecker: {targets: ["h.*.mlp.*"], terms: auto, budget: 0.5, progressive: 2}
          - lowrank: {targets: ["h.*.mlp.*", "h.0.attn.c_proj"], rank_ratio: 0.5}
        """)
        let plan = try FactorizationPlan.make(recipe: recipe, config: distil, ranks: 3, scalapackMinElements: nil, secondsPerUnit: 1)
        XCTAssertEqual(plan.jobs.filter { $0.stage == 0 }.count, 12)
        XCTAssertEqual(plan.jobs.filter { $0.stage == 1 }.map(\.layer), ["h.0.attn.c_proj"])
        let fc = try XCTUnwrap(plan.jobs.first { $0.layer == "h.0.mlp.c_fc" })
        XCTAssertEqual(fc.seconds, 2 * FactorizationPlan.kroneckerUnits(768, 3072))
    }

    func testATargetMatchingNothingIsNamed() {
        XCTAssertThrowsError(try FactorizationPlan.make(recipe: try Recipe.parse("stages:\n  - lowrank: {targets: [\"h.9.mlp.*\"], rank: 4}\n"),
                                                        config: distil, ranks: 2, scalapackMinElements: nil, secondsPerUnit: 1)) {
            XCTAssertTrue("\($0)".contains("h.9.mlp.*"), "\($0)")
        }
    }
}
