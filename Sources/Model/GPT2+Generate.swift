import Kernels
import Foundation
import Tensor

/// Text generation with a key/value cache: the prompt runs through one batched forward pass,
/// then each new token costs one row through every layer.
extension GPT2 {
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

    /// Generates up to `maxTokens` ids after `prompt` (stopping early at `stopID`, or when the
    /// context is full). `onToken` sees each new id as it is produced. Returns the new ids.
    public func generate(prompt: [Int], maxTokens: Int, sampling: Sampling, stopID: Int? = nil,
                         onToken: ((Int) -> Void)? = nil) throws -> [Int] {
        let C = config.nEmbd, V = config.vocabSize, L = config.nLayer, NH = config.nHead, H = config.nInner
        guard !prompt.isEmpty else { throw ModelError.input("generate: the prompt is empty") }
        guard prompt.count < config.nPositions else {
            throw ModelError.input("generate: the prompt has \(prompt.count) tokens; the context holds \(config.nPositions)")
        }
        guard sampling.temperature >= 0 else { throw ModelError.input("generate: temperature must be >= 0") }
        var rng = RandomGenerator(seed: sampling.seed)
        let maxT = config.nPositions
        var kCache = [[Float]](repeating: [Float](repeating: 0, count: maxT * C), count: L)
        var vCache = kCache

        // Prefill: one forward over the prompt; keys and values come from its qkv activations.
        let P = prompt.count
        let logitsAll = try forward(ids: prompt.map { Int32($0) }, B: 1, T: P)
        var logits = Array(logitsAll[((P - 1) * V)..<(P * V)])
        let a = acts!
        for l in 0..<L {
            let qkv = a.get("qkv.\(l)", P * 3 * C)
            for t in 0..<P {
                for c in 0..<C {
                    kCache[l][t * C + c] = qkv[t * 3 * C + C + c]
                    vCache[l][t * C + c] = qkv[t * 3 * C + 2 * C + c]
                }
            }
        }
        releaseActivations()

        var out: [Int] = []
        var x = [Float](repeating: 0, count: C), h = [Float](repeating: 0, count: C), qkv = [Float](repeating: 0, count: 3 * C)
        var y = [Float](repeating: 0, count: C), proj = [Float](repeating: 0, count: C)
        var fc = [Float](repeating: 0, count: H), fcg = [Float](repeating: 0, count: H)
        var mean: Float = 0, rstd: Float = 0
        var scores = [Float](repeating: 0, count: maxT)
        let hs = C / NH, scale = 1 / Float(hs).squareRoot()
        let p = params
        var pos = P
        while out.count < maxTokens {
            let next = sample(logits, sampling, &rng)
            out.append(next)
            onToken?(next)
            if next == stopID || pos >= maxT || out.count == maxTokens { break }
            // One row through the network at position `pos`.
            x.withUnsafeMutableBufferPointer { xp in
                embedding.row(next, into: xp.baseAddress!, params: p)
                let wpe = p.value("wpe.weight") + pos * C
                for c in 0..<C { xp[c] += wpe[c] }
            }
            for l in 0..<L {
                let b = blocks[l]
                x.withUnsafeBufferPointer { xp in h.withUnsafeMutableBufferPointer { hp in
                    layerNormForward(out: hp.baseAddress!, mean: &mean, rstd: &rstd, inp: xp.baseAddress!, weight: p.value(b.ln1.w),
                                     bias: p.value(b.ln1.b), N: 1, C: C, eps: config.layerNormEpsilon)
                } }
                h.withUnsafeBufferPointer { hp in qkv.withUnsafeMutableBufferPointer { q in
                    b.cAttn.forward(x: hp.baseAddress!, N: 1, out: q.baseAddress!, params: p)
                } }
                for c in 0..<C { kCache[l][pos * C + c] = qkv[C + c]; vCache[l][pos * C + c] = qkv[2 * C + c] }
                for head in 0..<NH {
                    var mx = -Float.infinity
                    for t in 0...pos {
                        var s: Float = 0
                        for d in 0..<hs { s += qkv[head * hs + d] * kCache[l][t * C + head * hs + d] }
                        scores[t] = s * scale
                        mx = max(mx, scores[t])
                    }
                    var sum: Float = 0
                    for t in 0...pos { scores[t] = expf(scores[t] - mx); sum += scores[t] }
                    for d in 0..<hs {
                        var acc: Float = 0
                        for t in 0...pos { acc += scores[t] * vCache[l][t * C + head * hs + d] }
                        y[head * hs + d] = acc / sum
                    }
                }
                y.withUnsafeBufferPointer { yp in proj.withUnsafeMutableBufferPointer { pp in
                    b.attnProj.forward(x: yp.baseAddress!, N: 1, out: pp.baseAddress!, params: p)
                } }
                for c in 0..<C { x[c] += proj[c] }
                x.withUnsafeBufferPointer { xp in h.withUnsafeMutableBufferPointer { hp in
                    layerNormForward(out: hp.baseAddress!, mean: &mean, rstd: &rstd, inp: xp.baseAddress!, weight: p.value(b.ln2.w),
                                     bias: p.value(b.ln2.b), N: 1, C: C, eps: config.layerNormEpsilon)
                } }
                h.withUnsafeBufferPointer { hp in fc.withUnsafeMutableBufferPointer { f in
                    b.cFc.forward(x: hp.baseAddress!, N: 1, out: f.baseAddress!, params: p)
                } }
                fc.withUnsafeBufferPointer { f in fcg.withUnsafeMutableBufferPointer { g in
                    geluForward(out: g.baseAddress!, inp: f.baseAddress!, count: H)
                } }
                fcg.withUnsafeBufferPointer { g in proj.withUnsafeMutableBufferPointer { pp in
                    b.mlpProj.forward(x: g.baseAddress!, N: 1, out: pp.baseAddress!, params: p)
                } }
                for c in 0..<C { x[c] += proj[c] }
            }
            x.withUnsafeBufferPointer { xp in h.withUnsafeMutableBufferPointer { hp in
                layerNormForward(out: hp.baseAddress!, mean: &mean, rstd: &rstd, inp: xp.baseAddress!, weight: p.value("ln_f.weight"),
                                 bias: p.value("ln_f.bias"), N: 1, C: C, eps: config.layerNormEpsilon)
            } }
            h.withUnsafeBufferPointer { hp in logits.withUnsafeMutableBufferPointer { lp in
                embedding.headForward(h: hp.baseAddress!, N: 1, logits: lp.baseAddress!, params: p)
            } }
            pos += 1
        }
        return out
    }
}

/// Picks the next id: argmax when temperature is 0, else a draw from softmax(logits / T)
/// restricted to the top k.
func sample(_ logits: [Float], _ s: GPT2.Sampling, _ rng: inout RandomGenerator) -> Int {
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
