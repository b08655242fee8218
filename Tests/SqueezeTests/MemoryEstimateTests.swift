import XCTest
import Model
@testable import Training

/// The distillation memory estimate against its closed form (gpt2 shape, one rank).
final class MemoryEstimateTests: XCTestCase {
    let config = GPT2Config()   // gpt2: 12 x 768
    var floats: Int { 124_439_808 }

    func estimate(ranks: Int = 1, loaded: Bool, gradientsAllocated: Bool = false, shard: Bool = true) -> MemoryEstimate {
        var s = DistillSettings()
        s.seq = 1024
        let forms = GPT2Forms(config: config)
        var job = MemoryEstimate.DistillationJob(student: forms, teacher: forms, settings: s)
        (job.ranks, job.ranksPerNode, job.shardOptimizer, job.tokens, job.loaded, job.gradientsAllocated) = (ranks, ranks, shard, 1000, loaded, gradientsAllocated)
        return MemoryEstimate.distillation(job, microBatch: 1, available: nil)
    }

    func testLoadedLeavesOutWeightsTeacherAndDataOnly() {
        let full = estimate(loaded: false), loaded = estimate(loaded: true)
        XCTAssertEqual(full.perRank - loaded.perRank, MemoryEstimate.processOverhead + 4 * floats)
        XCTAssertEqual(full.perNode - loaded.perNode, MemoryEstimate.processOverhead + 4 * floats + 4 * floats + 2 * 1000)
    }

    func testGradientsAlreadyAllocatedAreNotCountedAgain() {
        XCTAssertEqual(estimate(loaded: true).perRank - estimate(loaded: true, gradientsAllocated: true).perRank, 4 * floats)
    }

    func testShardedMomentsFallWithTheRanks() {
        XCTAssertEqual(estimate(ranks: 1, loaded: true).perRank - estimate(ranks: 4, loaded: true).perRank, 8 * floats - 8 * floats / 4)
        XCTAssertEqual(estimate(ranks: 4, loaded: true, shard: false).perRank, estimate(ranks: 1, loaded: true).perRank)
    }
}
