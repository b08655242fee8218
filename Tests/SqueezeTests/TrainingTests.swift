import Kernels
import Foundation
import Model
import MPI
import Tensor
import Training
import TestSupport
import XCTest

/// AdamW, distillation loss and perplexity against transformers / closed forms.
final class TrainingTests: XCTestCase {
    /// 10 AdamW steps (decay on matrices only, clipping at 1.0) reproduce torch.optim.AdamW's losses.
    func testAdamWStepsMatchTorch() throws {
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let j = try Fixtures.json("gpt2_step.json")
        let ids = (j["input_ids"] as! [Any]).int32s, targets = (j["targets"] as! [Any]).int32s
        let a = j["adamw"] as! [String: Any]
        let want = (a["losses"] as! [Any]).doubles
        let opt = AdamW(parameterCount: model.params.count, beta1: Float(a["beta1"] as! Double), beta2: Float(a["beta2"] as! Double),
                        eps: Float(a["eps"] as! Double), weightDecay: Float(a["weight_decay"] as! Double))
        // decay flags follow the fixture's rule: dim >= 2 decays.
        for s in model.params.slots { XCTAssertEqual(s.decay, s.shape.count >= 2, s.name) }
        var got: [Double] = []
        for step in 0...10 {
            model.params.zeroGrads()
            try model.forward(ids: ids, B: 2, T: 8)
            let (loss, _) = try model.crossEntropy(targets: targets, computeGradient: true)
            got.append(loss)
            if step == 10 { break }
            try model.backward()
            let norm = clipGradients(model.params, maxNorm: Float(a["grad_clip"] as! Double))
            if step == 0 { XCTAssertEqual(norm, j["grad_norm_step0"] as! Double, accuracy: 1e-4 * norm) }
            opt.update(model.params, lr: Float(a["lr"] as! Double))
        }
        for (g, w) in zip(got, want) { XCTAssertLessThanOrEqual(abs(g - w) / w, 1e-4, "AdamW losses \(got) vs \(want)") }
    }

    /// The KD gradient equals a central finite difference of the KD loss.
    func testDistillationGradientMatchesFiniteDifferences() {
        let N = 3, V = 7
        var rng = RandomGenerator(seed: 5)
        let zs = (0..<N * V).map { _ in rng.nextGaussian() * 2 }, zt = (0..<N * V).map { _ in rng.nextGaussian() * 2 }
        let targets: [Int32] = [2, -1, 6]
        func loss(_ z: [Float]) -> Double {
            let (kd, ce) = distillationLoss(student: z, teacher: zt, targets: targets, N: N, V: V, temperature: 2, alpha: 0.3,
                                            scale: 1, dlogits: nil)
            return kd + 0.7 * ce
        }
        var d = [Float](repeating: 0, count: N * V)
        _ = distillationLoss(student: zs, teacher: zt, targets: targets, N: N, V: V, temperature: 2, alpha: 0.3, scale: 1, dlogits: &d)
        for i in 0..<(N * V) {
            var p = zs, m = zs
            p[i] += 1e-2; m[i] -= 1e-2
            let fd = (loss(p) - loss(m)) / 2e-2
            XCTAssertEqual(Double(d[i]), fd, accuracy: 2e-3, "dlogits[\(i)]")
        }
        // The ignored row has zero gradient; KL of identical distributions is zero.
        XCTAssertEqual(d[V..<(2 * V)].map(abs).max(), 0)
        let (kd0, _) = distillationLoss(student: zt, teacher: zt, targets: targets, N: N, V: V, temperature: 2, alpha: 1, scale: 1, dlogits: nil)
        XCTAssertEqual(kd0, 0, accuracy: 1e-5)
    }

    /// Sliding-window perplexity equals transformers' on the fixture text for three strides.
    func testPerplexityMatchesTransformers() throws {
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let j = try Fixtures.json("eval.json")
        let ids = (j["ids"] as! [Any]).int32s
        let tok = try GPT2Tokenizer(directory: Fixtures.tinyGPT2)
        XCTAssertEqual(tok.encode(j["text"] as! String).map { Int32($0) }, ids)
        for case let r as [String: Any] in j["results"] as! [Any] {
            let stride = r["stride"] as! Int
            for batch in [1, 3] {
                let got = try evaluatePerplexity(model: model, tokens: ids, stride: stride, batch: batch, comm: .world)
                XCTAssertEqual(got.tokens, r["tokens"] as! Int, "stride \(stride)")
                let want = r["perplexity"] as! Double
                XCTAssertLessThanOrEqual(abs(got.perplexity - want) / want, 1e-4, "stride \(stride) batch \(batch): \(got.perplexity) vs \(want)")
            }
        }
    }

    /// Greedy generation with the KV cache, F32 or BF16, gives transformers' greedy ids.
    func testGreedyGenerationMatchesTransformers() throws {
        let model = try GPT2.load(directory: Fixtures.tinyGPT2)
        let j = try Fixtures.json("generate.json")
        let prompt = (j["prompt_ids"] as! [Any]).map { ($0 as! NSNumber).intValue }
        let want = (j["output_ids"] as! [Any]).map { ($0 as! NSNumber).intValue }
        let tok = try GPT2Tokenizer(directory: Fixtures.tinyGPT2)
        XCTAssertEqual(tok.encode(j["prompt"] as! String), prompt)
        for kv in KVPrecision.allCases {
            let out = try model.generate(prompt: prompt, maxTokens: j["max_new_tokens"] as! Int, sampling: .init(temperature: 0), kvCache: kv)
            XCTAssertEqual(prompt + out, want, "\(kv) cache")
        }
    }

    /// The LR schedule: linear warmup, cosine to the floor.
    func testScheduleShape() {
        let s = LRSchedule(lr: 1, warmup: 10, total: 110, minRatio: 0.1)
        XCTAssertEqual(s.at(0), 0.1, accuracy: 1e-6)
        XCTAssertEqual(s.at(9), 1, accuracy: 1e-6)
        XCTAssertEqual(s.at(60), 0.55, accuracy: 1e-5)
        XCTAssertEqual(s.at(110), 0.1, accuracy: 1e-6)
    }
}
