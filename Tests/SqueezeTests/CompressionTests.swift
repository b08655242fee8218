import Compression
import Foundation
import Model
import MPI
import Tensor
import TestSupport
import XCTest

/// Pruning, Kronecker, low rank and analysis against numpy/torch references
/// (scripts/make_compression_reference.py) and closed forms.
final class CompressionTests: XCTestCase {
    var ref: SafeTensorsFile!
    var json: [String: Any]!
    var model: SafeTensorsFile!

    override func setUpWithError() throws {
        ref = try SafeTensorsFile(url: Fixtures.reference("compression.safetensors"))
        json = try Fixtures.json("compression.json")
        model = try SafeTensorsFile(url: Fixtures.tinyGPT2.appendingPathComponent("model.safetensors"))
    }

    // XCTest never frees its test case instances (each one and its XCTestRun hold each other), so
    // without this each of the class's tests would keep its two fixture files mapped for the rest
    // of the run, and LeakSanitizer reports their Data storage: Data keeps the pointer to it with
    // an enum tag bit set in its top byte, which LSan's pointer scan cannot follow.
    override func tearDown() {
        ref = nil
        json = nil
        model = nil
        super.tearDown()
    }

    func weight(_ name: String) throws -> Tensor { try model.tensor("transformer." + name) }

    func testMagnitudeMasksEqualNumpy() throws {
        let w = try weight("h.0.mlp.c_fc.weight")
        XCTAssertEqual(Pruning.magnitudeMask(w.data, sparsity: 0.5), try ref.floats("magnitude.mask"))
        XCTAssertEqual(Pruning.magnitudeMask(w.data, sparsity: 0.3), try ref.floats("magnitude30.mask"))
    }

    func testGlobalMagnitudeMasksEqualNumpy() throws {
        let names = ["h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight"]
        let masks = Pruning.globalMagnitudeMasks(try names.map { try weight($0).data }, sparsity: 0.6)
        for (n, m) in zip(names, masks) { XCTAssertEqual(m, try ref.floats("global.mask." + n), n) }
        let want = (json["global"] as! [String: Any])["per_layer_sparsity"] as! [String: Double]
        for (n, m) in zip(names, masks) { XCTAssertEqual(Pruning.sparsity(of: m), want[n]!, accuracy: 1e-12) }
    }

    func testTwoFourMaskEqualsNumpy() throws {
        let w = try weight("h.0.mlp.c_fc.weight")
        let mask = try Pruning.nmMask(w.data, rows: 16, cols: 64, n: 2, m: 4)
        XCTAssertEqual(mask, try ref.floats("nm24.mask"))
        XCTAssertThrowsError(try Pruning.nmMask(w.data, rows: 16, cols: 64, n: 2, m: 3)) { e in
            XCTAssertTrue("\(e)".contains("multiple of m"), "\(e)")
        }
    }

    func testWandaMaskEqualsNumpy() throws {
        let w = try weight("h.1.mlp.c_fc.weight")
        let x = try ref.tensor("wanda.X")
        let norms = (0..<16).map { j in (0..<x.rows).reduce(0.0) { $0 + Double(x[$1, j]) * Double(x[$1, j]) }.squareRoot() }
        let mask = try Pruning.wandaMask(w.data, rows: 16, cols: 64, inputNorms: norms, sparsity: 0.5)
        XCTAssertEqual(mask, try ref.floats("wanda.mask"))
    }

    func hessian(_ x: Tensor) -> [Double] {
        let n = x.cols
        var h = [Double](repeating: 0, count: n * n)
        for r in 0..<x.rows { for i in 0..<n { let xi = Double(x[r, i]); for j in 0..<n { h[i * n + j] += xi * Double(x[r, j]) } } }
        return h
    }

    func testSparseGPTEqualsReferenceImplementation() throws {
        let w = try weight("h.0.mlp.c_proj.weight")
        let h = hessian(try ref.tensor("sparsegpt.X"))
        let (pruned, mask) = try sparseGPT(weight: w.data, rows: 64, cols: 16, hessian: h, sparsity: 0.5, blockSize: 32)
        let want = try ref.floats("sparsegpt.W")
        XCTAssertLessThanOrEqual(maxAbsDifference(pruned, want), 1e-4 * want.map(abs).max()!)
        XCTAssertEqual(mask.map { $0 == 0 }, want.map { $0 == 0 }, "same pruned positions")
        XCTAssertEqual(Pruning.sparsity(of: mask), 0.501953125)   // the reference's <= threshold prunes one extra per block
        let (p24, m24) = try sparseGPT(weight: w.data, rows: 64, cols: 16, hessian: h, sparsity: 0.5, nm: (2, 4), blockSize: 32)
        let want24 = try ref.floats("sparsegpt24.W")
        XCTAssertLessThanOrEqual(maxAbsDifference(p24, want24), 1e-4 * want24.map(abs).max()!)
        XCTAssertEqual(Pruning.sparsity(of: m24), 0.5)
    }

    func testRearrangementAndNearestKroneckerEqualNumpy() throws {
        let w = try ref.tensor("nkp.W")
        let s = KroneckerShape(m1: 3, n1: 4, m2: 4, n2: 5)
        XCTAssertEqual(try NearestKronecker.rearrange(w, s).data, try ref.floats("nkp.R"))
        let nkp = json["nkp"] as! [String: Any]
        for (k, key) in [(1, "1"), (2, "2")] {
            let r = try NearestKronecker.factorize(w, shape: s, terms: k)
            let recon = NearestKronecker.reconstruct(a: r.a, b: r.b)
            XCTAssertLessThanOrEqual(maxAbsDifference(recon.data, try ref.floats("nkp.recon" + key)), 1e-4)
            // Error = closed form from R's singular values = the real Frobenius distance.
            XCTAssertEqual(r.error, nkp["error" + key] as! Double, accuracy: 1e-4)
            XCTAssertEqual(Double((w - recon).frobeniusNorm), r.error, accuracy: 1e-4)
        }
        let fc = try weight("h.0.mlp.c_fc.weight")
        let r = try NearestKronecker.factorize(fc, shape: KroneckerShape(m1: 4, n1: 8, m2: 4, n2: 8), terms: 1)
        XCTAssertLessThanOrEqual(maxAbsDifference(NearestKronecker.reconstruct(a: r.a, b: r.b).data, try ref.floats("nkp_fc.recon1")), 1e-5)
        XCTAssertEqual(r.error, (json["nkp_fc"] as! [String: Any])["error1"] as! Double, accuracy: 1e-5)
    }

    func testAutoKroneckerShapeRespectsBudgetAndErrorsOnBadFactors() throws {
        let fc = try weight("h.0.mlp.c_fc.weight")
        let (shape, err) = try NearestKronecker.autoShape(fc, terms: 1, budget: 512)
        XCTAssertLessThanOrEqual(NearestKronecker.parameters(shape, terms: 1), 512)
        XCTAssertEqual(try NearestKronecker.factorize(fc, shape: shape, terms: 1).error, err, accuracy: 1e-5)
        XCTAssertThrowsError(try NearestKronecker.rearrange(fc, KroneckerShape(m1: 3, n1: 8, m2: 5, n2: 8)))
    }

    func testTruncatedSVDMeetsEckartYoung() throws {
        let w = try ref.tensor("lowrank.W")
        let f = try LowRank.factorize(w, rank: 5)
        let recon = try f.w0.matmul(f.w1, transposeOther: true)
        XCTAssertLessThanOrEqual(maxAbsDifference(recon.data, try ref.floats("lowrank.recon")), 1e-4)
        let lr = json["lowrank"] as! [String: Any]
        XCTAssertEqual(Double((w - recon).frobeniusNorm), lr["tail"] as! Double, accuracy: 1e-4)
        XCTAssertEqual(f.error, lr["tail"] as! Double, accuracy: 1e-4)
        // W0 = U sqrt(S), W1 = V sqrt(S): the factors are balanced (equal column norms).
        for k in 0..<5 {
            let a = (0..<30).reduce(0.0) { $0 + Double(f.w0[$1, k] * f.w0[$1, k]) }
            let b = (0..<20).reduce(0.0) { $0 + Double(f.w1[$1, k] * f.w1[$1, k]) }
            XCTAssertEqual(a, b, accuracy: 1e-4 * a)
        }
    }

    func testRankRules() {
        let sv: [Double] = [4, 2, 1, 1]   // energies 16, 4, 1, 1 of 22
        XCTAssertEqual(LowRank.rank(for: .ratio(0.5), rows: 8, cols: 4, singularValues: sv), 2)
        XCTAssertEqual(LowRank.rank(for: .energy(0.9), rows: 8, cols: 4, singularValues: sv), 2)
        XCTAssertEqual(LowRank.rank(for: .energy(0.95), rows: 8, cols: 4, singularValues: sv), 3)
        XCTAssertEqual(LowRank.rank(for: .budget(0.5), rows: 8, cols: 4, singularValues: sv), 1)
        XCTAssertEqual(LowRank.progressiveRanks(full: 100, target: 20, stages: 4), [80, 60, 40, 20])
        XCTAssertEqual(Pruning.cubicSparsity(step: 0, steps: 10, initial: 0, final: 0.5), 0)
        XCTAssertEqual(Pruning.cubicSparsity(step: 5, steps: 10, initial: 0, final: 0.5), 0.4375, accuracy: 1e-12)
        XCTAssertEqual(Pruning.cubicSparsity(step: 10, steps: 10, initial: 0, final: 0.5), 0.5)
    }

    func testAnalysisEqualsNumpy() throws {
        let a = try ModelAnalysis.of(try GPT2.load(directory: Fixtures.tinyGPT2))
        let an = json["analysis"] as! [String: Any]
        let want = an["weights"] as! [[String: Any]]
        XCTAssertEqual(a.layers.map(\.name).sorted(), want.map { $0["name"] as! String }.sorted())
        for w in want {
            let got = a.layers.first { $0.name == w["name"] as! String }!
            XCTAssertEqual(got.params, w["params"] as! Int)
            XCTAssertEqual(got.nonzero, w["nonzero"] as! Int)
            for (value, key) in [(got.fro, "fro"), (got.spectral, "spectral"), (got.stableRank, "stable_rank"), (got.stableRankUnsquared, "stable_rank_unsquared")] {
                let v = w[key] as! Double
                XCTAssertEqual(value, v, accuracy: 1e-5 * v, "\(got.name) \(key)")
            }
            XCTAssertEqual(got.effectiveRank90, w["effective_rank_90"] as! Int, got.name)
            XCTAssertEqual(got.effectiveRank99, w["effective_rank_99"] as! Int, got.name)
        }
        let totals = an["totals"] as! [String: Any]
        XCTAssertEqual(a.sumStableRank, totals["sum_stable_rank"] as! Double, accuracy: 1e-4)
        XCTAssertEqual(a.log10BoundProxy, totals["log10_bound_proxy"] as! Double, accuracy: 1e-5)
    }

    func testRecipeErrorsNameTheKey() throws {
        func message(_ yaml: String) -> String {
            do { _ = try Recipe.parse(yaml); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 1.5, targets: [\"h.*\"]}").contains("stages[0].prune.sparsity must be in [0, 1)"))
        XCTAssertTrue(message("stages:\n  - lowrank: {rank: 0, targets: [\"h.*\"]}").contains("stages[0].lowrank.rank must be >= 1"))
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 0.5, targest: [\"h.*\"]}").contains("unknown key 'stages[0].prune.targest'"))
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 0.5, method: bogus, targets: [\"h.*\"]}").contains("magnitude, wanda, sparsegpt"))
        XCTAssertTrue(message("stages:\n  - kronecker: {targets: [\"h.*\"], factors: [2]}").contains("factors must be 'auto' or [m1, n1]"))
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 0.5, schedule: cubic, targets: [\"h.*\"]}").contains("needs a 'distill' block"))
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 0.5, targets: [\"h.*\"]}\n    distill: {steps: 10, lr: 2.0}").contains("stages[0].distill.lr"))
        XCTAssertTrue(message("stages: []").contains("non-empty"))
        XCTAssertTrue(message("stages:\n  - prune: {sparsity: 0.5, targets: [\"h.*\"]}\nsed: 3").contains("unknown key 'sed'"))
        let m = try GPT2.load(directory: Fixtures.tinyGPT2)
        let c = Compressor(model: m, comm: .world)
        XCTAssertThrowsError(try c.resolve(["h.*.mlp.c_fcc"], at: "stages[0].prune")) { e in
            XCTAssertTrue("\(e)".contains("target 'h.*.mlp.c_fcc' matches no layer"), "\(e)")
        }
        XCTAssertEqual(try c.resolve(["h.*.attn.*", "h.1.mlp.c_fc.weight"], at: "x"), ["h.0.attn.c_attn", "h.0.attn.c_proj", "h.1.attn.c_attn", "h.1.attn.c_proj", "h.1.mlp.c_fc"])
        let k = try Recipe.parse("stages:\n  - kronecker: {targets: [\"h.0.attn.c_attn\"], factors: [5, 4]}")
        guard case .kronecker(let spec) = k.stages[0].method else { return XCTFail() }
        XCTAssertThrowsError(try c.kronecker(spec, stage: 0)) { e in XCTAssertTrue("\(e)".contains("layer h.0.attn.c_attn"), "\(e)") }
    }
}
