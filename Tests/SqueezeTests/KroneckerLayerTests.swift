import Foundation
import Kernels
import Model
import Compression
import Tensor
import TestSupport
import XCTest

/// A Kronecker layer in both product orders, with learnable scales, against its dense weight:
/// forward, and every gradient equal to the dense gradient dW = xᵀ dY pushed through
/// W = Σ s_i A_i ⊗ B_i (dA_i = s_i Σ_rt dW B_i, dB_i = s_i Σ_pq dW A_i, ds_i = <dW, A_i ⊗ B_i>).
final class KroneckerLayerTests: XCTestCase {
    func check(_ shape: KroneckerShape, terms: Int, bFirst: Bool) throws {
        let comp = KroneckerComponent(prefix: "k", shape: shape, terms: terms, scaled: true)
        XCTAssertEqual(comp.shape.bFirst, bFirst, "product order for \(shape)")
        var rng = RandomGenerator(seed: 9)
        let params = ParameterSet(layout: comp.parameters.map { ($0.name, $0.shape, true) })
        for s in params.slots { for i in 0..<s.count { params.value(s.name)[i] = s.name.hasSuffix(".s") ? 1.5 + Float(i) : rng.nextGaussian() } }
        let N = 5, inF = comp.inFeatures, outF = comp.outFeatures
        let x = (0..<(N * inF)).map { _ in rng.nextGaussian() }, dy = (0..<(N * outF)).map { _ in rng.nextGaussian() }
        let w = comp.denseWeight(params: params)
        // Forward against x · W.
        var out = [Float](repeating: 0, count: N * outF)
        let passes = ComponentPasses(comp, rows: N)
        passes.forward(x: x, out: &out, params: params)
        let want = try Tensor(shape: [N, inF], data: x).matmul(w).data
        assertRelativeClose(out, want, rtol: 1e-4, "forward")
        // Backward against the projected dense gradient.
        var dx = [Float](repeating: 0, count: N * inF)
        passes.backward(x: x, dout: dy, dx: &dx, accumulate: false, params: params)
        let dW = try Tensor(shape: [N, inF], data: x).matmul(Tensor(shape: [N, outF], data: dy), transposeSelf: true)
        assertRelativeClose(dx, try Tensor(shape: [N, outF], data: dy).matmul(w, transposeOther: true).data, rtol: 1e-4, "dx")
        let (m1, n1, m2, n2) = (shape.m1, shape.n1, shape.m2, shape.n2)
        for i in 0..<terms {
            let a = comp.factorA(i, params: params), b = comp.factorB(i, params: params), s = comp.scale(i, params: params)
            var da = [Float](repeating: 0, count: m1 * n1), db = [Float](repeating: 0, count: m2 * n2), ds: Float = 0
            for p in 0..<m1 { for q in 0..<n1 { for r in 0..<m2 { for t in 0..<n2 {
                let g = dW.data[(p * m2 + r) * outF + q * n2 + t]
                da[p * n1 + q] += s * g * b[r * n2 + t]
                db[r * n2 + t] += s * g * a[p * n1 + q]
                ds += g * a[p * n1 + q] * b[r * n2 + t]
            } } } }
            assertRelativeClose(Array(UnsafeBufferPointer(start: params.grad(comp.name(i, "a")), count: m1 * n1)), da, rtol: 1e-4, "dA\(i)")
            assertRelativeClose(Array(UnsafeBufferPointer(start: params.grad(comp.name(i, "b")), count: m2 * n2)), db, rtol: 1e-4, "dB\(i)")
            XCTAssertEqual(params.grad(comp.name(i, "s"))[0], ds, accuracy: 1e-4 * max(1, abs(ds)), "ds\(i)")
        }
    }

    func testBothProductOrdersWithScalesMatchTheDenseWeight() throws {
        try check(KroneckerShape(m1: 2, n1: 3, m2: 4, n2: 5), terms: 2, bFirst: true)    // m1·n2 = 10 <= n1·m2 = 12
        try check(KroneckerShape(m1: 6, n1: 2, m2: 2, n2: 7), terms: 3, bFirst: false)   // m1·n2 = 42 > n1·m2 = 4
    }
}

/// The token embedding (tied head) in every weight form the block linears take: compressed by the
/// same compressor code, its logits and gradients equal those of the dense model it represents.
final class EmbeddingFormTests: XCTestCase {
    let ids: [Int32] = [464, 3290, 286, 257, 1049, 318, 1115, 13, 50256, 40, 716, 407, 2048, 11, 644, 198]
    let targets: [Int32] = [3290, 286, 257, 1049, 318, 1115, 13, 50256, 40, 716, 407, 2048, 11, 644, 198, 464]

    /// Loss gradients of `m` after one forward/backward.
    func step(_ m: GPT2) throws {
        m.params.zeroGrads()
        try m.forward(ids: ids, B: 2, T: 8)
        _ = try m.crossEntropy(targets: targets, computeGradient: true)
        try m.backward()
    }

    func compressed(_ stage: String) throws -> GPT2 {
        let m = try GPT2.load(directory: Fixtures.tinyGPT2)
        let r = try Recipe.parse("stages:\n  - \(stage)")
        let c = Compressor(model: m, comm: .world)
        try c.compress(r.stages[0])
        return m
    }

    func testLowRankAndKroneckerEmbeddingsMatchTheirDenseWeight() throws {
        for stage in ["lowrank: {targets: [wte], rank: 6}", "kronecker: {targets: [wte], factors: [29, 4], terms: 2}",
                      "prune: {targets: [wte], sparsity: 0.5}"] {
            let m = try compressed(stage)
            let d = try m.densified()
            XCTAssertNotEqual(m.embedding.formKinds, "dense", stage)
            XCTAssertLessThanOrEqual(maxAbsDifference(try m.logits(ids: ids, B: 2, T: 8), try d.logits(ids: ids, B: 2, T: 8)), 1e-5, stage)
            try step(m)
            try step(d)
            // dW of the dense embedding pushed through the factorization.
            let dW = d.params.gradTensor(TokenEmbedding.denseName), V = m.config.vocabSize, C = m.config.nEmbd
            switch m.embedding.components[0] {
            case let l as LowRankComponent:
                let w0 = m.params.tensor(l.w0Name), w1 = m.params.tensor(l.w1Name)
                assertRelativeClose(m.params.gradTensor(l.w0Name).data, try dW.matmul(w1).data, rtol: 2e-3, "\(stage): dW0")
                assertRelativeClose(m.params.gradTensor(l.w1Name).data, try dW.matmul(w0, transposeSelf: true).data, rtol: 2e-3, "\(stage): dW1")
            case let k as KroneckerComponent:
                let s = k.shape
                for i in 0..<k.terms {
                    let a = k.factorA(i, params: m.params), b = k.factorB(i, params: m.params), sc = k.scale(i, params: m.params)
                    var da = [Float](repeating: 0, count: s.m1 * s.n1), db = [Float](repeating: 0, count: s.m2 * s.n2)
                    for p in 0..<s.m1 { for q in 0..<s.n1 { for r in 0..<s.m2 { for t in 0..<s.n2 {
                        let g = dW.data[(p * s.m2 + r) * C + q * s.n2 + t]
                        da[p * s.n1 + q] += sc * g * b[r * s.n2 + t]
                        db[r * s.n2 + t] += sc * g * a[p * s.n1 + q]
                    } } } }
                    assertRelativeClose(m.params.gradTensor(k.name(i, "a")).data, da, rtol: 2e-3, "\(stage): dA\(i)")
                    assertRelativeClose(m.params.gradTensor(k.name(i, "b")).data, db, rtol: 2e-3, "\(stage): dB\(i)")
                }
            case let dense as DenseComponent:
                XCTAssertNotNil(dense.mask)
                m.maskGradients()
                let mask = dense.mask!
                assertRelativeClose(m.params.gradTensor(dense.weightName).data, (0..<(V * C)).map { mask[$0] ? dW.data[$0] : 0 }, rtol: 1e-4, stage)
            default: XCTFail(stage)
            }
            // Save and load keep the form.
            let dir = try Fixtures.temporaryDirectory(self).appendingPathComponent("m")
            try m.save(to: dir)
            let back = try GPT2.load(directory: dir)
            XCTAssertEqual(back.embedding.formKinds, m.embedding.formKinds, stage)
            XCTAssertEqual(try back.logits(ids: ids, B: 2, T: 8), try m.logits(ids: ids, B: 2, T: 8), stage)
        }
    }
}
