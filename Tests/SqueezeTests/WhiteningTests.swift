import Compression
import Foundation
import Model
import MPI
import Tensor
import TestSupport
import XCTest

/// Whitened (data-aware) low rank and Kronecker against their closed forms, the sensitivity
/// allocation against brute force, and the Kronecker stage's least-squares default.
final class WhiteningTests: XCTestCase {
    /// Inputs X [rows, n] with strongly unequal, correlated channels (a random mixing of columns
    /// scaled 1 … 1/30), so the output error weighs directions of W very differently.
    func inputs(rows: Int, n: Int, seed: UInt64) -> [Double] {
        var g = RandomGenerator(seed: seed)
        let mix = (0..<(n * n)).map { k in Double(g.nextGaussian()) / (1 + Double(k % n) * 30 / Double(n)) }
        let z = (0..<(rows * n)).map { _ in Double(g.nextGaussian()) }
        var x = [Double](repeating: 0, count: rows * n)
        dgemm(m: rows, n: n, k: n, a: z, b: mix, c: &x)
        return x
    }

    /// XᵀX by loops.
    func gram(_ x: [Double], rows: Int, n: Int) -> [Double] {
        var h = [Double](repeating: 0, count: n * n)
        for r in 0..<rows { for i in 0..<n { for j in 0..<n { h[i * n + j] += x[r * n + i] * x[r * n + j] } } }
        return h
    }

    /// tr(Dᵀ H D) by loops, D = W − Ŵ [m, n].
    func outputError(_ w: Tensor, _ approx: Tensor, _ h: [Double]) -> Double {
        let m = w.shape[0], n = w.shape[1]
        var e = 0.0
        for c in 0..<n { for i in 0..<m { for j in 0..<m {
            e += (Double(w[i, c]) - Double(approx[i, c])) * h[i * m + j] * (Double(w[j, c]) - Double(approx[j, c]))
        } } }
        return e
    }

    /// Cholesky by loops: lower L with L Lᵀ = H.
    func cholesky(_ h: [Double], n: Int) -> [Double] {
        var l = [Double](repeating: 0, count: n * n)
        for i in 0..<n { for j in 0...i {
            var s = h[i * n + j]
            for k in 0..<j { s -= l[i * n + k] * l[j * n + k] }
            l[i * n + j] = i == j ? s.squareRoot() : s / l[j * n + j]
        } }
        return l
    }

    func testWhitenedLowRankMeetsTheClosedForm() throws {
        let (rows, m, n, k) = (400, 24, 16, 5)
        let h = Whitening.damped(gram(inputs(rows: rows, n: m, seed: 3), rows: rows, n: m), n: m, percdamp: 0.01)
        let w = Tensor.randomNormal(shape: [m, n], seed: 4)
        // The closed form: the tail of the spectrum of LᵀW, L Lᵀ = XᵀX + λI (loops, then LAPACK's values).
        let l = cholesky(h, n: m)
        var ltw = [Double](repeating: 0, count: m * n)
        for i in 0..<m { for c in 0..<n { for j in i..<m { ltw[i * n + c] += l[j * m + i] * Double(w[j, c]) } } }
        let sigma = try svdDouble(ltw, rows: m, cols: n, valuesOnly: true).S
        let tail = sigma.dropFirst(k).reduce(0) { $0 + $1 * $1 }
        let r = try Whitening.lowRank(w, cholesky: try Whitening.cholesky(h, n: m, what: "test"), rank: { _ in k })
        XCTAssertEqual(r.w0.shape, [m, k])
        XCTAssertEqual(r.w1.shape, [n, k])
        let approx = try r.w0.matmul(r.w1, transposeOther: true)
        let achieved = outputError(w, approx, h)
        XCTAssertEqual(achieved, tail, accuracy: 1e-5 * sigma.reduce(0) { $0 + $1 * $1 })
        XCTAssertEqual(r.error * r.error, tail, accuracy: 1e-9 * tail)
        for (a, b) in zip(r.singularValues, sigma) { XCTAssertEqual(a, b, accuracy: 1e-9 * sigma[0]) }
        // Balanced: ‖Lᵀ W0 e_j‖² = ‖W1 e_j‖² = σ_j.
        for j in 0..<k {
            var a = 0.0, b = 0.0
            for i in 0..<m { var s = 0.0; for t in i..<m { s += l[t * m + i] * Double(r.w0[t, j]) }; a += s * s }
            for i in 0..<n { b += Double(r.w1[i, j]) * Double(r.w1[i, j]) }
            XCTAssertEqual(a, sigma[j], accuracy: 1e-4 * sigma[j])
            XCTAssertEqual(b, sigma[j], accuracy: 1e-4 * sigma[j])
        }
        // Plain SVD (least ‖W − Ŵ‖_F) does worse on the same X.
        let plain = try LowRank.factorize(w, rank: k)
        let plainError = outputError(w, try plain.w0.matmul(plain.w1, transposeOther: true), h)
        XCTAssertLessThan(achieved, 0.9 * plainError, "whitened \(achieved) vs plain \(plainError)")
        XCTAssertEqual(Whitening.outputError(w, approx, gram: h), achieved, accuracy: 1e-9 * achieved)
    }

    func testWhitenedKroneckerSweepsNeverIncreaseTheErrorAndBeatPlainNKP() throws {
        let s = KroneckerShape(m1: 4, n1: 4, m2: 6, n2: 5)
        let (rows, m) = (600, s.m1 * s.m2)
        let h = Whitening.damped(gram(inputs(rows: rows, n: m, seed: 5), rows: rows, n: m), n: m, percdamp: 0.01)
        let w = Tensor.randomNormal(shape: [m, s.n1 * s.n2], seed: 6)
        for terms in [1, 3] {
            let r = try WhitenedKronecker.factorize(w, gram: h, shape: s, terms: terms, sweeps: 6, percdamp: 0.01)
            XCTAssertEqual(r.errors.count, 7)
            for (a, b) in zip(r.errors, r.errors.dropFirst()) { XCTAssertLessThanOrEqual(b, a * (1 + 1e-12), "terms \(terms): \(r.errors)") }
            XCTAssertLessThan(r.errors.last!, r.errors[0], "the sweeps improve on the whitened NKP: \(r.errors)")
            let final = outputError(w, NearestKronecker.reconstruct(a: r.a, b: r.b), h)
            XCTAssertEqual(final, r.errors.last!, accuracy: 1e-5 * final)
            let nkp = try NearestKronecker.factorize(w, shape: s, terms: terms)
            let plain = outputError(w, NearestKronecker.reconstruct(a: nkp.a, b: nkp.b), h)
            XCTAssertLessThan(final, 0.9 * plain, "terms \(terms): whitened \(final) vs plain NKP \(plain)")
        }
    }

    /// When XᵀX is exactly C1 ⊗ C2 the whitened NKP is the optimum: its error is the tail of the
    /// spectrum of R((L1 ⊗ L2)ᵀ W), and ALS sweeps cannot lower it.
    func testWhitenedKroneckerIsExactForAKroneckerGram() throws {
        let s = KroneckerShape(m1: 3, n1: 4, m2: 5, n2: 3)
        func spd(_ k: Int, _ seed: UInt64) -> [Double] {
            let x = inputs(rows: 40, n: k, seed: seed)
            return Whitening.damped(gram(x, rows: 40, n: k), n: k, percdamp: 0.05)
        }
        let c1 = spd(s.m1, 7), c2 = spd(s.m2, 8), m = s.m1 * s.m2
        var h = [Double](repeating: 0, count: m * m)
        for a in 0..<s.m1 { for b in 0..<s.m2 { for a2 in 0..<s.m1 { for b2 in 0..<s.m2 {
            h[(a * s.m2 + b) * m + a2 * s.m2 + b2] = c1[a * s.m1 + a2] * c2[b * s.m2 + b2]
        } } } }
        let w = Tensor.randomNormal(shape: [m, s.n1 * s.n2], seed: 9)
        // W̃ = (L1 ⊗ L2)ᵀ W by loops, then its rearrangement's spectrum.
        let l1 = cholesky(c1, n: s.m1), l2 = cholesky(c2, n: s.m2)
        var wt = [Float](repeating: 0, count: w.count)
        for a in 0..<s.m1 { for b in 0..<s.m2 { for c in 0..<w.shape[1] {
            var v = 0.0
            for a2 in 0..<s.m1 { for b2 in 0..<s.m2 { v += l1[a2 * s.m1 + a] * l2[b2 * s.m2 + b] * Double(w[a2 * s.m2 + b2, c]) } }
            wt[(a * s.m2 + b) * w.shape[1] + c] = Float(v)
        } } }
        let sigma = try NearestKronecker.rearrange(try Tensor(shape: w.shape, data: wt), s).singularValuesDouble()
        for terms in [1, 2] {
            let tail = sigma.dropFirst(terms).reduce(0) { $0 + $1 * $1 }
            let r = try WhitenedKronecker.factorize(w, gram: h, shape: s, terms: terms, sweeps: 2, percdamp: 1e-12)
            XCTAssertEqual(r.errors[0], tail, accuracy: 1e-4 * tail)
            XCTAssertEqual(r.errors.last!, tail, accuracy: 1e-4 * tail)
            XCTAssertEqual(outputError(w, NearestKronecker.reconstruct(a: r.a, b: r.b), h), tail, accuracy: 1e-4 * tail)
        }
    }

    func testWaterFillingMatchesBruteForce() {
        var g = RandomGenerator(seed: 12)
        for _ in 0..<20 {
            // Three layers, equal unit costs, non-increasing gains: greedy is optimal.
            let gains = (0..<3).map { _ in (0..<5).map { _ in Double(abs(g.nextGaussian())) }.sorted(by: >) }
            let budget = 4 + Int(g.next() % 8)
            let got = Allocation.waterFill(gains: gains, unitCost: [2, 2, 2], minimum: [1, 1, 1], maximum: [5, 5, 5], budget: 2 * budget)
            var best = -1.0
            for a in 1...5 { for b in 1...5 { for c in 1...5 where a + b + c <= budget {
                best = max(best, gains[0].prefix(a).reduce(0, +) + gains[1].prefix(b).reduce(0, +) + gains[2].prefix(c).reduce(0, +))
            } } }
            let value = zip(gains, got).reduce(0.0) { $0 + $1.0.prefix($1.1).reduce(0, +) }
            XCTAssertLessThanOrEqual(got.reduce(0, +), budget)
            XCTAssertEqual(value, best, accuracy: 1e-12, "\(gains) budget \(budget): \(got)")
        }
        // Unequal costs: layer 0 removes 4, 4, 1 per parameter, layer 1 3, 3: 4, 4, 3 fill 10 but for
        // 1 parameter, which the 1 of layer 0 takes.
        XCTAssertEqual(Allocation.waterFill(gains: [[10, 4, 4, 1], [30, 9, 9]], unitCost: [1, 3], minimum: [1, 1], maximum: [4, 3], budget: 10), [4, 2])
        XCTAssertEqual(Allocation.breakEvenRank(256, 768), 192)
    }

    func testKroneckerWithoutDistillationKeepsTheLeastSquaresFactors() throws {
        func spec(_ yaml: String) throws -> Recipe.KroneckerSpec {
            guard case .kronecker(let k) = try Recipe.parse(yaml).stages[0].method else { throw CompressionError.recipe("not kronecker") }
            return k
        }
        func body(_ extra: String) -> String { "stages:\n  - kronecker: {targets: [\"h.0.mlp.c_fc\"], factors: [4, 8], terms: 2\(extra)}\n" }
        XCTAssertFalse(try spec(body("")).scale)
        XCTAssertTrue(try spec(body("") + "    distill: {steps: 10}").scale)
        XCTAssertFalse(try spec(body(", scale: false") + "    distill: {steps: 10}").scale)
        XCTAssertTrue(try spec(body(", scale: true")).scale)
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let c = Compressor(model: model, comm: .world)
        let w = c.denseWeight("h.0.mlp.c_fc")
        try c.kronecker(try spec(body("")), stage: 0)
        let optimum = try NearestKronecker.factorize(w, shape: KroneckerShape(m1: 4, n1: 8, m2: 4, n2: 8), terms: 2).error
        XCTAssertEqual(Double((w - c.denseWeight("h.0.mlp.c_fc")).frobeniusNorm), optimum, accuracy: 1e-5 * Double(w.frobeniusNorm))
    }

    func testWhitenedStagesRunOnTheCalibration() throws {
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let c = Compressor(model: model, comm: .world)
        var g = RandomGenerator(seed: 21)
        c.calibrationTokens = (0..<2000).map { _ in UInt16(g.next() % 2000) }
        c.calibration = try Recipe.parse("calibration: {samples: 8, seq: 32}\nstages:\n  - distill: {steps: 1}").calibration
        let names = c.layerNames.filter { $0 != "wte" }
        let dense = names.reduce(0) { $0 + c.storedParameters($1) }
        func method(_ yaml: String) throws -> Recipe.Method { try Recipe.parse(yaml).stages[0].method }
        guard case .lowrank(let lr) = try method("stages:\n  - lowrank: {targets: [\"h.*\"], budget: 0.5, whiten: true, allocate: sensitivity}") else { return XCTFail() }
        let reports = try c.lowrank(lr, stage: 0)
        XCTAssertEqual(reports.count, names.count)
        XCTAssertLessThanOrEqual(names.reduce(0) { $0 + c.storedParameters($1) }, dense / 2)
        XCTAssertTrue(reports.allSatisfy { $0.method.contains("whitened by sensitivity") }, "\(reports.map(\.method))")
        // Installed balanced, as plain low rank is: ‖W0 e_j‖ = ‖W1 e_j‖.
        for n in names {
            let lr = try XCTUnwrap(model.layer(n)?.single as? LowRankComponent)
            let w0 = model.params.tensor(lr.w0Name), w1 = model.params.tensor(lr.w1Name)
            for j in 0..<lr.rank {
                let a = (0..<w0.rows).reduce(0.0) { $0 + Double(w0[$1, j] * w0[$1, j]) }, b = (0..<w1.rows).reduce(0.0) { $0 + Double(w1[$1, j] * w1[$1, j]) }
                XCTAssertEqual(a, b, accuracy: 1e-3 * a, "\(n) column \(j)")
            }
        }
        let fresh = try GPT2.load(directory: Fixtures.tinyGPT2), k = Compressor(model: fresh, comm: .world)
        (k.calibrationTokens, k.calibration) = (c.calibrationTokens, c.calibration)
        guard case .kronecker(let kr) = try method("stages:\n  - kronecker: {targets: [\"h.*\"], terms: auto, budget: 0.5, whiten: true, als: 2}") else { return XCTFail() }
        let kreports = try k.kronecker(kr, stage: 0)
        for (n, r) in zip(names, kreports) {
            let kc = try XCTUnwrap(fresh.layer(n)?.single as? KroneckerComponent, n)
            XCTAssertLessThanOrEqual(r.paramsAfter, r.paramsBefore / 2, n)
            for i in 0..<kc.terms {   // balanced as Van Loan's factors: ‖A_i‖_F = ‖B_i‖_F
                let a = kc.factorA(i, params: fresh.params).reduce(0) { $0 + $1 * $1 }, b = kc.factorB(i, params: fresh.params).reduce(0) { $0 + $1 * $1 }
                XCTAssertEqual(a, b, accuracy: 1e-4 * a, "\(n) term \(i)")
            }
        }
        guard case .lowrank(let emb) = try method("stages:\n  - lowrank: {targets: [\"wte\"], rank: 4, whiten: true}") else { return XCTFail() }
        XCTAssertThrowsError(try c.lowrank(emb, stage: 0)) { e in
            XCTAssertTrue("\(e)".contains("lookup table"), "\(e)")
        }
    }

    func testRecipeKeysOfTheDataAwareMethods() throws {
        func message(_ body: String) -> String {
            do { _ = try Recipe.parse("stages:\n  - \(body)"); return "no error" } catch { return "\(error)" }
        }
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], budget: 0.5, percdamp: 0.1}").contains("percdamp dampens the whitening"))
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], budget: 0.5, allocate: sensitivity}").contains("it needs whiten: true"))
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], rank: 4, whiten: true, allocate: uniform}").contains("allocate shares a budget"))
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], budget: 0.5, whiten: true, allocate: most}").contains("uniform, sensitivity"))
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], budget: 0.5, whiten: yes please}").contains("whiten must be true or false"))
        XCTAssertTrue(message("lowrank: {targets: [\"h.*\"], budget: 0.5, whiten: true, progressive: 2}").contains("one-shot"))
        XCTAssertTrue(message("kronecker: {targets: [\"h.*\"], terms: 2, als: 2}").contains("als refines whitened factors"))
        XCTAssertTrue(message("kronecker: {targets: [\"h.*\"], terms: 2, whiten: true, allocate: sensitivity}").contains("needs terms: auto"))
        XCTAssertTrue(message("kronecker: {targets: [\"h.*\"], terms: 2, whiten: true, als: -1}").contains("als must be >= 0"))
        XCTAssertTrue(message("kronecker: {targets: [\"h.*\"], terms: 2, whiten: true, init: select}").contains("use vanloan"))
        guard case .kronecker(let k) = try Recipe.parse("stages:\n  - kronecker: {targets: [\"h.*\"], terms: auto, whiten: true, percdamp: 0.05, als: 5, allocate: sensitivity}").stages[0].method else {
            return XCTFail()
        }
        XCTAssertEqual([k.whiten ? 1 : 0, k.percdamp, Double(k.als)], [1, 0.05, 5])
        XCTAssertEqual(k.allocate, .sensitivity)
    }

    func testThePlanSaysWhatWaitsForCalibrationAndHowBudgetsAreShared() throws {
        let config = GPT2Config(vocabSize: 50257, nPositions: 256, nEmbd: 256, nLayer: 2, nHead: 8)
        let recipe = try Recipe.parse("""
        stages:
          - lowrank: {targets: ["h.*.attn.*"], budget: 0.5}
          - lowrank: {targets: ["h.*.mlp.*"], budget: 0.5, whiten: true, allocate: sensitivity}
          - kronecker: {targets: ["wte"], terms: auto, budget: 0.5}
        """)
        let plan = try FactorizationPlan.make(recipe: recipe, config: config, ranks: 2, scalapackMinElements: nil, secondsPerUnit: 1e-9)
        XCTAssertEqual(plan.jobs.filter(\.calibrated).map(\.layer), ["h.0.mlp.c_fc", "h.0.mlp.c_proj", "h.1.mlp.c_fc", "h.1.mlp.c_proj"])
        XCTAssertTrue(plan.jobs.filter(\.calibrated).allSatisfy { $0.method == "lowrank+w" && $0.owner != nil })
        let text = plan.describe()
        XCTAssertTrue(text.contains("stage(s) 2 need calibration"), text)
        // Uniform: rank ⌊0.5·m·n/(m + n)⌋ per shape; sensitivity and terms: auto are decided at run time.
        XCTAssertTrue(text.contains("stage 1 lowrank: uniform: 2 x [256x768] rank 96; 2 x [256x256] rank 64 (262144 of 524288 parameters)"), text)
        XCTAssertTrue(text.contains("stage 2 lowrank (whitened): budget 0.5 by sensitivity over 4 layers (524288 of 1048576 parameters): ranks decided at run time"), text)
        XCTAssertTrue(text.contains("stage 3 kronecker: terms: auto, budget 0.5 uniform: 1 x [50257x256] up to"), text)
    }
}
