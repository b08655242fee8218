import Foundation
import XCTest
import Model
import Tensor
@testable import Training

/// The memory estimate against what the allocations really take: the resident memory a training
/// step adds (activations with every component's saved state, the head's chunk buffers,
/// gradients), measured, for a dense, a low-rank and a Kronecker model.
final class MemoryEstimateTests: XCTestCase {
    /// Resident bytes of this process now (VmRSS).
    func residentBytes() throws -> Int {
        let text = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
        return try XCTUnwrap(Int(line.split(separator: " ")[1])) * 1024
    }

    /// A 4 x 256 model with a 4096-token vocabulary, its block linears in `form`.
    func model(_ form: String) throws -> GPT2 {
        var c = GPT2Config()
        (c.vocabSize, c.nEmbd, c.nLayer, c.nHead, c.nPositions, c.nInner) = (4096, 256, 4, 4, 256, 1024)
        let m = try GPT2(config: c, seed: 3)
        var tensors: [String: Tensor] = [:]
        var g = RandomGenerator(seed: 5)
        for lin in m.linears {
            switch form {
            case "lowrank":
                let comp = LowRankComponent(layer: lin.name, inFeatures: lin.inFeatures, outFeatures: lin.outFeatures, rank: 96)
                lin.components = [comp]
            case "kronecker":
                let s = KroneckerShape(m1: 16, n1: lin.outFeatures / 32, m2: lin.inFeatures / 16, n2: 32)
                lin.components = [KroneckerComponent(prefix: lin.name, shape: s, terms: 2)]
            default: continue
            }
            for p in lin.components[0].parameters {
                tensors[p.name] = try Tensor(shape: p.shape, data: (0..<p.shape.reduce(1, *)).map { _ in 0.02 * g.nextGaussian() })
            }
        }
        try m.rebuildParameters(from: tensors)
        return m
    }

    func testATrainingStepAllocatesWhatTheEstimateCounts() throws {
        for form in ["dense", "lowrank", "kronecker"] {
            let m = try model(form)
            let (B, T) = (8, 256)
            let ids = (0..<(B * T)).map { Int32(($0 * 7919) % 4096) }
            let before = try residentBytes()
            try m.forward(ids: ids, B: B, T: T)
            _ = try m.crossEntropy(targets: ids, computeGradient: true)
            try m.backward()
            let measured = try residentBytes() - before
            // What the step allocated: activations (component state included), the head's logits
            // and their gradient, and the gradients.
            let f = m.forms
            let estimate = f.trainingActivationBytes(B: B, T: T, recompute: false) + f.headBytes(rows: B * T, buffers: 2, backward: true)
                + 4 * f.parameterFloats
            let ratio = Double(estimate) / Double(measured)
            XCTAssertEqual(ratio, 1, accuracy: 0.1, "\(form): estimate \(estimate >> 20) MiB, measured \(measured >> 20) MiB")
            m.releaseActivations()
            m.params.releaseGradients()
        }
    }

    /// The component state is most of the difference between forms: a 2-term Kronecker layer keeps
    /// its intermediate product for backward, as large as the layer's output.
    func testComponentStateIsCounted() throws {
        let dense = try model("dense").forms, kron = try model("kronecker").forms
        let extra = kron.trainingActivationBytes(B: 8, T: 256, recompute: false) - dense.trainingActivationBytes(B: 8, T: 256, recompute: false)
        let saved = kron.blocks.flatMap(\.linears).reduce(0) { $0 + 4 * $1.savedFloats(rows: 8 * 256) }
        XCTAssertGreaterThan(saved, 0)
        XCTAssertGreaterThanOrEqual(extra, saved)
    }

    func testShardedMomentsFallWithTheRanks() throws {
        var s = DistillSettings()
        s.seq = 256
        let forms = try model("dense").forms
        func perRank(_ ranks: Int, shard: Bool) -> Int {
            var job = MemoryEstimate.DistillationJob(student: forms, teacher: forms, settings: s)
            (job.ranks, job.ranksPerNode, job.shardOptimizer, job.loaded) = (ranks, ranks, shard, true)
            return MemoryEstimate.distillation(job, microBatch: 1, available: nil).perRank
        }
        let floats = forms.parameterFloats
        XCTAssertEqual(perRank(1, shard: true) - perRank(4, shard: true), 8 * floats - 8 * floats / 4)
        XCTAssertEqual(perRank(4, shard: false), perRank(1, shard: true))
    }
}
