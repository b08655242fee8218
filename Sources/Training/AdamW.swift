import Kernels
import Foundation
import Model

/// AdamW (Loshchilov & Hutter) over a model's flat parameter buffer, matching
/// `torch.optim.AdamW`: decoupled weight decay `p -= lr·wd·p` on decayed slots, then the Adam
/// update with bias correction. It updates the flat ranges it owns (all of them on one rank; a
/// shard of them with ZeRO-1) and keeps moments for those only, back to back in range order.
public final class AdamW {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    /// Steps taken so far (the bias-correction exponent).
    public private(set) var step: Int = 0
    /// The flat parameter ranges this optimizer updates, in order.
    public let ranges: [Range<Int>]
    public private(set) var m: [Float]
    public private(set) var v: [Float]

    /// An optimizer for the flat ranges `ranges` of a parameter buffer.
    public init(ranges: [Range<Int>], beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        self.ranges = ranges
        let n = ranges.reduce(0) { $0 + $1.count }
        m = [Float](repeating: 0, count: n)
        v = [Float](repeating: 0, count: n)
    }

    /// An optimizer for the whole buffer of `parameterCount` floats.
    public convenience init(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.init(ranges: [0..<parameterCount], beta1: beta1, beta2: beta2, eps: eps, weightDecay: weightDecay)
    }

    /// Restores moments and step (checkpoint resume); `read(range, into)` supplies the flat
    /// moments of each owned range.
    public func restore(step: Int, m readM: (Range<Int>, UnsafeMutablePointer<Float>) throws -> Void,
                        v readV: (Range<Int>, UnsafeMutablePointer<Float>) throws -> Void) throws {
        self.step = step
        var o = 0
        for r in ranges {
            try m.withUnsafeMutableBufferPointer { try readM(r, $0.baseAddress! + o) }
            try v.withUnsafeMutableBufferPointer { try readV(r, $0.baseAddress! + o) }
            o += r.count
        }
    }

    /// Restores whole-buffer moments (one rank).
    public func restore(step: Int, m: [Float], v: [Float]) throws {
        guard m.count == self.m.count, v.count == self.v.count else {
            throw TrainingError.checkpoint("optimizer moments have \(m.count) values, the model has \(self.m.count) parameters")
        }
        self.step = step
        self.m = m
        self.v = v
    }

    /// One update of the owned parameters from `params.grads` with learning rate `lr`.
    public func update(_ params: ParameterSet, lr: Float) {
        step += 1
        let bc1 = 1 - Float(pow(Double(beta1), Double(step)))
        let bc2 = 1 - Float(pow(Double(beta2), Double(step)))
        let stepSize = lr / bc1
        let vals = params.values.baseAddress!, grads = params.grads.baseAddress!
        m.withUnsafeMutableBufferPointer { mp in
            v.withUnsafeMutableBufferPointer { vp in
                var o = 0   // offset of the current range in the moments
                var slotIndex = 0
                let slots = params.slots
                for r in ranges {
                    // Each piece of the range inside one slot shares the slot's decay flag;
                    // alignment padding between slots has zero gradient and stays zero.
                    var lo = r.lowerBound
                    while lo < r.upperBound {
                        while slotIndex + 1 < slots.count && slots[slotIndex + 1].offset <= lo { slotIndex += 1 }
                        while slotIndex > 0 && slots[slotIndex].offset > lo { slotIndex -= 1 }
                        let next = slotIndex + 1 < slots.count ? slots[slotIndex + 1].offset : params.count
                        let hi = min(r.upperBound, next)
                        let decay: Float = slots.isEmpty || !slots[slotIndex].decay ? 1 : 1 - lr * weightDecay
                        adamwStep(values: vals + lo, grads: grads + lo, m: mp.baseAddress! + o + (lo - r.lowerBound),
                                  v: vp.baseAddress! + o + (lo - r.lowerBound), count: hi - lo, stepSize: stepSize, decay: decay,
                                  beta1: beta1, beta2: beta2, eps: eps, bc2Sqrt: bc2.squareRoot())
                        lo = hi
                    }
                    o += r.count
                }
            }
        }
    }
}


/// The factor torch's clip_grad_norm_ scales gradients by: maxNorm / (norm + 1e-6) when that
/// is below 1, else 1 (and 1 when maxNorm is 0: no clipping).
public func clipCoefficient(norm: Double, maxNorm: Float) -> Float {
    guard maxNorm > 0 else { return 1 }
    return min(1, Float(Double(maxNorm) / (norm + 1e-6)))
}
