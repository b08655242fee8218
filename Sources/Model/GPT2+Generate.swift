import Kernels
import Foundation
import Tensor

/// Text generation with a key/value cache: the prompt runs through one batched forward pass,
/// then each new token costs one row through every layer.
/// Sampling settings: `temperature == 0` is greedy; `topK` keeps the k most likely tokens.
public struct Sampling: Sendable {
    public var temperature: Float
    public var topK: Int?
    public var seed: UInt64
    public init(temperature: Float = 1, topK: Int? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.seed = seed
    }
}


extension InferenceNetwork {
    /// Generates up to `maxTokens` ids after `prompt` (stopping early at `stopID`, or when the
    /// context is full). `onToken` sees each new id as it is produced. Returns the new ids. The
    /// KV cache holds the prompt and the new tokens in `kvCache` precision.
    public func generate(prompt: [Int], maxTokens: Int, sampling: Sampling, stopID: Int? = nil, kvCache: KVPrecision = .bf16,
                         onToken: ((Int) -> Void)? = nil) throws -> [Int] {
        guard !prompt.isEmpty else { throw ModelError.input("generate: the prompt is empty") }
        guard prompt.count < config.nPositions else {
            throw ModelError.input("generate: the prompt has \(prompt.count) tokens; the context holds \(config.nPositions)")
        }
        guard sampling.temperature >= 0 else { throw ModelError.input("generate: temperature must be >= 0") }
        var rng = RandomGenerator(seed: sampling.seed)
        let cache = KVCache(config: config, maxT: prompt.count + max(maxTokens, 1), precision: kvCache)
        // Prefill: the prompt in one pass fills the cache; then one row per new token. The last
        // row's logits go to the head's chunk buffer (no allocation per token).
        func nextLogits(_ ids: [Int32]) throws -> UnsafeBufferPointer<Float> {
            let h = try hiddenStates(ids: ids, B: 1, T: ids.count, cache: cache)
            let buf = headBuffers(rows: 1, teacher: nil)
            head(h + (ids.count - 1) * config.nEmbd, N: 1, logits: buf.logits, scratch: buf.scratch)
            return UnsafeBufferPointer(start: buf.logits, count: config.vocabSize)
        }
        var logits = try nextLogits(prompt.map { Int32($0) })
        var out: [Int] = []
        while out.count < maxTokens {
            let next = sample(logits, sampling, &rng)
            out.append(next)
            onToken?(next)
            if next == stopID || cache.used >= cache.maxT || out.count == maxTokens { break }
            logits = try nextLogits([Int32(next)])
        }
        releaseInferenceBuffers()
        return out
    }
}

/// Picks the next id: argmax when temperature is 0, else a draw from softmax(logits / T)
/// restricted to the top k.
func sample(_ logits: UnsafeBufferPointer<Float>, _ s: Sampling, _ rng: inout RandomGenerator) -> Int {
    if s.temperature == 0 {
        var best = 0
        for i in 1..<logits.count where logits[i] > logits[best] { best = i }
        return best
    }
    var idx = Array(logits.indices)
    if let k = s.topK, k > 0, k < logits.count {
        idx.sort { logits[$0] > logits[$1] }
        idx = Array(idx.prefix(k))
    }
    let mx = idx.map { logits[$0] }.max()!
    let w = idx.map { Double(expf((logits[$0] - mx) / s.temperature)) }
    let total = w.reduce(0, +)
    var u = Double(rng.nextUniform()) * total
    for (j, i) in idx.enumerated() {
        u -= w[j]
        if u <= 0 { return i }
    }
    return idx.last!
}

extension GPT2 {
    public typealias Sampling = Model.Sampling
}
