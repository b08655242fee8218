import Model
import MPI
import Tensor

/// `squeeze bench model`: a distilgpt2-shaped random model, forward and forward+backward
/// throughput as a fraction of the sgemm peak measured in the same run.
public struct ModelBenchResult: Codable, Sendable {
    public var config: [String: Int]
    public var B: Int
    public var T: Int
    public var threads: Int
    public var sgemmPeakGflops: Double
    public var forwardFlopsPerToken: Double
    public var forwardTokensPerSecond: Double
    public var forwardPercentOfPeak: Double
    public var trainTokensPerSecond: Double
    public var trainPercentOfPeak: Double
    public var flopConvention: String
}

/// Forward FLOPs per token as in scripts/bench/pytorch_baseline.py:
/// 2 (non-embedding params + V C) + 4 L T C (attention over the full T).
public func forwardFlopsPerToken(_ model: GPT2, T: Int) -> Double {
    let c = model.config
    let nonEmbedding = model.params.slots.filter { !$0.name.hasPrefix("wte") && $0.name != "wpe.weight" }.reduce(0) { $0 + $1.count }
    return 2 * Double(nonEmbedding + c.vocabSize * c.nEmbd) + 4 * Double(c.nLayer * T * c.nEmbd)
}

public let flopConvention = "forward FLOPs/token = 2*(non-embedding params + vocab*n_embd) + 4*n_layer*T*n_embd; backward = 2x forward"

/// The distilgpt2 shape: 6 layers, 768 wide, 12 heads, vocabulary 50257, context 1024.
public let distilGPT2Config = GPT2Config(vocabSize: 50257, nPositions: 1024, nEmbd: 768, nLayer: 6, nHead: 12)

public func runModelBench(config: GPT2Config = distilGPT2Config, B: Int = 4, T: Int = 256, repeats: Int = 3) throws -> ModelBenchResult {
    let peak = measureSgemmPeak()
    let model = try GPT2(config: config, seed: 1)
    var rng = RandomGenerator(seed: 2)
    let ids = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
    let targets = (0..<(B * T)).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
    // Forward: the inference forward with every position's logits (made chunk by chunk and
    // scored, as evaluation does). Forward+backward: the training forward, the fused head and
    // loss, and backward.
    let tFwd = try bestTime(repeats: repeats) { _ = try model.negativeLogLikelihood(ids: ids, targets: targets, B: B, T: T) }
    let tTrain = try bestTime(repeats: repeats) {
        model.params.zeroGrads()
        try model.forward(ids: ids, B: B, T: T)
        _ = try model.crossEntropy(targets: targets, computeGradient: true)
        try model.backward()
    }
    let f = forwardFlopsPerToken(model, T: T)
    let tokens = Double(B * T)
    let fwdTok = tokens / tFwd, trainTok = tokens / tTrain
    return ModelBenchResult(config: ["n_layer": config.nLayer, "n_embd": config.nEmbd, "n_head": config.nHead, "vocab_size": config.vocabSize],
                            B: B, T: T, threads: BLAS.threads, sgemmPeakGflops: peak, forwardFlopsPerToken: f,
                            forwardTokensPerSecond: fwdTok, forwardPercentOfPeak: 100 * fwdTok * f / 1e9 / peak,
                            trainTokensPerSecond: trainTok, trainPercentOfPeak: 100 * trainTok * 3 * f / 1e9 / peak,
                            flopConvention: flopConvention)
}
