import Compression
import Foundation
import Model
import MPI
import Tensor
import Training
import TestSupport
import XCTest

/// Every linear form (sparse, 2:4, low rank, low rank + sparse, Kronecker, Kronecker with
/// low-rank factors, low-rank embedding) against its dense equivalent, and the exported
/// directory against transformers.
final class LayerVariantTests: XCTestCase {
    static let compressed = Fixtures.root.appendingPathComponent("tiny-compressed")
    let ids: [Int32] = [464, 3290, 286, 257, 1049, 318, 1115, 13, 50256, 40, 716, 407, 2048, 11, 644, 198]
    let targets: [Int32] = [3290, 286, 257, 1049, 318, 1115, 13, 50256, 40, 716, 407, 2048, 11, 644, 198, 464]

    func testFixtureHoldsEveryForm() throws {
        let m = try GPT2.load(directory: Self.compressed)
        let forms = Set(m.linears.map(\.formKinds) + [m.embedding.formKinds])
        XCTAssertEqual(forms, ["sparse", "lowrank", "kronecker", "lowrank+sparse", "dense"])
        XCTAssertTrue(m.linears.contains { ($0.components.first as? KroneckerComponent)?.factorRankA != nil })
    }

    func testCompressedForwardEqualsDenseAndSaveRoundTrips() throws {
        let m = try GPT2.load(directory: Self.compressed)
        let d = try m.densified()
        let a = try m.logits(ids: ids, B: 2, T: 8), b = try d.logits(ids: ids, B: 2, T: 8)
        XCTAssertLessThanOrEqual(maxAbsDifference(a, b), 1e-5)
        let dir = try Fixtures.temporaryDirectory(self)
        try m.save(to: dir.appendingPathComponent("c"))
        let back = try GPT2.load(directory: dir.appendingPathComponent("c"))
        XCTAssertEqual(back.params.slots.map(\.name), m.params.slots.map(\.name))
        for s in m.params.slots { XCTAssertEqual(back.params.tensor(s.name).data, m.params.tensor(s.name).data, s.name) }
        for (x, y) in zip(back.linears, m.linears) { XCTAssertEqual(x.formKinds, y.formKinds) }
    }

    /// Gradients of every factor equal the dense gradient dW pushed through the factorization.
    func testFactorGradientsEqualProjectedDenseGradients() throws {
        let m = try GPT2.load(directory: Self.compressed)
        let d = try m.densified()
        for model in [m, d] {
            model.params.zeroGrads()
            try model.forward(ids: ids, B: 2, T: 8)
            _ = try model.crossEntropy(targets: targets, computeGradient: true)
            try model.backward()
        }
        let p = m.params
        func close(_ got: Tensor, _ want: Tensor, _ what: String) { assertRelativeClose(got.data, want.data, rtol: 2e-3, what) }
        for lin in m.linears {
            let dW = d.params.gradTensor(lin.name + ".weight")
            for c in lin.components {
                switch c {
                case let dc as DenseComponent:
                    close(p.gradTensor(dc.weightName), dW, dc.weightName)
                case let lr as LowRankComponent:
                    close(p.gradTensor(lr.w0Name), try dW.matmul(p.tensor(lr.w1Name)), lr.w0Name)
                    close(p.gradTensor(lr.w1Name), try dW.matmul(p.tensor(lr.w0Name), transposeSelf: true), lr.w1Name)
                case let k as KroneckerComponent:
                    let s = k.shape
                    for i in 0..<k.terms {
                        let A = k.factorA(i, params: p), B = k.factorB(i, params: p)
                        var dA = [Float](repeating: 0, count: s.m1 * s.n1), dB = [Float](repeating: 0, count: s.m2 * s.n2)
                        for a in 0..<s.m1 { for b in 0..<s.m2 { for c in 0..<s.n1 { for e in 0..<s.n2 {
                            let g = dW[a * s.m2 + b, c * s.n2 + e]
                            dA[a * s.n1 + c] += g * B[b * s.n2 + e]
                            dB[b * s.n2 + e] += g * A[a * s.n1 + c]
                        } } } }
                        let tA = try Tensor(shape: [s.m1, s.n1], data: dA), tB = try Tensor(shape: [s.m2, s.n2], data: dB)
                        if k.factorRankA != nil {
                            close(p.gradTensor(k.name(i, "a0")), try tA.matmul(p.tensor(k.name(i, "a1"))), k.name(i, "a0"))
                            close(p.gradTensor(k.name(i, "a1")), try tA.matmul(p.tensor(k.name(i, "a0")), transposeSelf: true), k.name(i, "a1"))
                            close(p.gradTensor(k.name(i, "b0")), try tB.matmul(p.tensor(k.name(i, "b1"))), k.name(i, "b0"))
                        } else {
                            close(p.gradTensor(k.name(i, "a")), tA, k.name(i, "a"))
                            close(p.gradTensor(k.name(i, "b")), tB, k.name(i, "b"))
                        }
                    }
                default: XCTFail("unknown component")
                }
            }
        }
        let dE = d.params.gradTensor("wte.weight")
        close(p.gradTensor("wte.lowrank.w0"), try dE.matmul(p.tensor("wte.lowrank.w1")), "wte.lowrank.w0")
        close(p.gradTensor("wte.lowrank.w1"), try dE.matmul(p.tensor("wte.lowrank.w0"), transposeSelf: true), "wte.lowrank.w1")
    }

    /// Masked weights stay exactly zero through training steps.
    func testPrunedWeightsStayZeroAfterOptimizerSteps() throws {
        let m = try GPT2.load(directory: Self.compressed)
        let opt = AdamW(parameterCount: m.params.count, weightDecay: 0.1)
        for _ in 0..<3 {
            m.params.zeroGrads()
            try m.forward(ids: ids, B: 2, T: 8)
            _ = try m.crossEntropy(targets: targets, computeGradient: true)
            try m.backward()
            m.maskGradients()
            opt.update(m.params, lr: 0.05)
            m.applyMasks()
        }
        var checked = 0
        for lin in m.linears {
            for case let dc as DenseComponent in lin.components {
                guard let mask = dc.mask?.floats else { continue }
                let w = m.params.tensor(dc.weightName).data
                for i in mask.indices where mask[i] == 0 { XCTAssertEqual(w[i], 0); checked += 1 }
                XCTAssertGreaterThan(zip(w, mask).filter { $1 != 0 && $0 != 0 }.count, 0)
            }
        }
        XCTAssertGreaterThan(checked, 1000)
        // Optimizer moments of pruned weights stay zero too (their gradients are masked).
        let slot = m.params.slot("h.0.mlp.c_fc.weight")
        let mask = m.linear("h.0.mlp.c_fc")!.mask!.floats
        for i in mask.indices where mask[i] == 0 { XCTAssertEqual(opt.m[slot.offset + i], 0) }
    }

    /// `squeeze export --dense` output loads as a plain GPT-2 with the logits transformers computed
    /// on that exported directory (scripts/make_export_reference.py).
    func testExportMatchesTransformers() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let m = try GPT2.load(directory: Self.compressed)
        try m.densified().save(to: dir.appendingPathComponent("dense"))
        let cfg = try String(contentsOf: dir.appendingPathComponent("dense/config.json"), encoding: .utf8)
        XCTAssertFalse(cfg.contains("compression"))
        let dense = try GPT2.load(directory: dir.appendingPathComponent("dense"))
        XCTAssertEqual(dense.linears.map(\.formKinds), Array(repeating: "dense", count: 8))
        let j = try Fixtures.json("export.json")
        let rows = (j["ids"] as! [[Any]])
        let ids = rows.flatMap { $0.int32s }
        let logits = try dense.logits(ids: ids, B: 2, T: 8)
        let ours = try m.logits(ids: ids, B: 2, T: 8)
        XCTAssertLessThanOrEqual(maxAbsDifference(logits, ours), 1e-5)
        let want = try SafeTensorsFile(url: Fixtures.reference("export_logits.safetensors")).floats("logits")
        let V = 50257
        var slice: [Float] = []
        for r in 0..<16 { slice += logits[(r * V)..<(r * V + 4096)] }
        XCTAssertLessThanOrEqual(maxAbsDifference(slice, want), 1e-4)
        let lse = (j["logsumexp"] as! [[Any]]).flatMap { $0.doubles }
        for r in 0..<16 {
            let row = logits[(r * V)..<((r + 1) * V)]
            let mx = row.max()!
            let got = Double(mx) + log(row.reduce(0.0) { $0 + exp(Double($1 - mx)) })
            XCTAssertEqual(got, lse[r], accuracy: 1e-4)
        }
    }

    /// A 50% sparse model takes at most 0.6x the bytes of the dense one.
    func testSparseModelBytesShrink() throws {
        let dir = try Fixtures.temporaryDirectory(self)
        let m = try GPT2.load(directory: Fixtures.tinyGPT2)
        try m.save(to: dir.appendingPathComponent("dense"))
        let r = try Recipe.parse("stages:\n  - prune: {sparsity: 0.5, targets: [\"wte\", \"h.*\"]}")
        guard case .prune(let spec) = r.stages[0].method else { return XCTFail() }
        try Compressor(model: m, comm: .world).prune(spec, stage: 0)
        try m.save(to: dir.appendingPathComponent("sparse"))
        func size(_ d: String) throws -> Double { Double(try FileManager.default.attributesOfItem(atPath: dir.appendingPathComponent(d + "/model.safetensors").path)[.size] as! Int) }
        let ratio = try size("sparse") / size("dense")
        XCTAssertLessThanOrEqual(ratio, 0.6, "sparse/dense bytes \(ratio)")
        let back = try GPT2.load(directory: dir.appendingPathComponent("sparse"))
        XCTAssertEqual(Pruning.sparsity(of: back.embedding.mask!.floats), 0.5, accuracy: 1e-6)
    }
}
