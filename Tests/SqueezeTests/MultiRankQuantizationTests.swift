import Compression
import Foundation
import Model
import MPI
import Tensor
import Training
import XCTest

/// GPTQ over the ranks (calibration windows split, XᵀX summed, per-layer sweeps spread by cost)
/// gives the model one rank alone gives, up to float summation order.
final class MultiRankQuantizationTests: MultiRankTestCase {
    func quantized(comm: Communicator, joint: Bool) throws -> GPT2 {
        let m = try QuantizedFormTests.wide()
        let c = Compressor(model: m, comm: comm)
        var g = RandomGenerator(seed: 21)
        c.calibrationTokens = (0..<3000).map { _ in UInt16(g.next() % 512) }
        c.calibration.samples = 12
        c.calibration.seq = 32
        let recipe = try Recipe.parse(joint ? """
            stages:
              - prune: {sparsity: 0.5, method: sparsegpt, targets: ["h.*"]}
                quantize: {format: q4_0, method: gptq, targets: ["h.*"]}
            """ : """
            stages:
              - quantize: {format: q4_0, method: gptq, targets: ["h.*", "wte"]}
            """)
        let st = recipe.stages[0]
        if case .prune(let p) = st.method { try c.quantize(st.quantize!, stage: 0, joint: p) } else { try c.quantize(st.quantize!, stage: 0) }
        return m
    }

    func testGPTQDoesNotDependOnRankCount() throws {
        guard let world = requireWorld() else { return }
        let alone = try XCTUnwrap(try world.split(color: world.rank))
        let ids: [Int32] = (0..<32).map { Int32($0 * 17 % 512) }
        for joint in [false, true] {
            let many = try quantized(comm: world, joint: joint), one = try quantized(comm: alone, joint: joint)
            var same = 0, total = 0
            for (a, b) in zip(many.linears, one.linears) {
                let qa = try XCTUnwrap(a.single as? QuantizedComponent), qb = try XCTUnwrap(b.single as? QuantizedComponent)
                for (k, blocks) in qa.blocks {
                    let other = try XCTUnwrap(qb.blocks[k])
                    for i in stride(from: 0, to: blocks.count, by: 18) { total += 1; if blocks[i..<(i + 18)] == other[i..<(i + 18)] { same += 1 } }
                }
                XCTAssertEqual(a.components[0].maskedParts.first?.mask, b.components[0].maskedParts.first?.mask, "\(a.name) (joint: \(joint))")
            }
            // Summation order may move a code across a rounding boundary now and then.
            XCTAssertGreaterThanOrEqual(Double(same) / Double(total), 0.99, "joint: \(joint)")
            let la = try many.logits(ids: ids, B: 1, T: 32), lb = try one.logits(ids: ids, B: 1, T: 32)
            XCTAssertLessThanOrEqual(zip(la, lb).map { abs($0 - $1) }.max()!, 1e-2 * max(1, lb.map(abs).max()!), "joint: \(joint)")
        }
    }
}
