import Foundation
import Kernels
import Model
import Tensor
import XCTest

/// A Kronecker layer in both product orders, with learnable scales, against its dense weight:
/// forward, and every gradient equal to the dense gradient dW = xᵀ dY pushed through
/// W = Σ s_i A_i ⊗ B_i (dA_i = s_i Σ_rt dW B_i, dB_i = s_i Σ_pq dW A_i, ds_i = <dW, A_i ⊗ B_i>).
final class KroneckerLayerTests: XCTestCase {
    func check(_ shape: KroneckerShape, terms: Int, bFirst: Bool) throws {
        let comp = KroneckerComponent(prefix: "k", shape: shape, terms: terms, scaled: true)
        XCTAssertEqual(comp.bFirst, bFirst, "product order for \(shape)")
        var rng = RandomGenerator(seed: 9)
        let params = ParameterSet(layout: comp.parameters.map { ($0.name, $0.shape, true) })
        for s in params.slots { for i in 0..<s.count { params.value(s.name)[i] = s.name.hasSuffix(".s") ? 1.5 + Float(i) : rng.nextGaussian() } }
        let N = 5, inF = comp.inFeatures, outF = comp.outFeatures
        let x = (0..<(N * inF)).map { _ in rng.nextGaussian() }, dy = (0..<(N * outF)).map { _ in rng.nextGaussian() }
        let w = comp.denseWeight(params: params)
        // Forward against x · W.
        var out = [Float](repeating: 0, count: N * outF)
        comp.forward(x: x, N: N, out: &out, params: params)
        let want = try Tensor(shape: [N, inF], data: x).matmul(w).data
        assertRelativeClose(out, want, rtol: 1e-4, "forward")
        // Backward against the projected dense gradient.
        var dx = [Float](repeating: 0, count: N * inF)
        comp.backward(x: x, dout: dy, dx: &dx, accumulate: false, N: N, params: params)
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
