import Kernels
import Foundation
import Model

/// AdamW (Loshchilov & Hutter) over a model's flat parameter buffer, matching
/// `torch.optim.AdamW`: decoupled weight decay `p -= lr·wd·p` on decayed slots, then the Adam
/// update with bias correction. Moments live in flat buffers shaped like the parameters.
public final class AdamW {
    public var beta1: Float
    public var beta2: Float
    public var eps: Float
    public var weightDecay: Float
    /// Steps taken so far (the bias-correction exponent).
    public private(set) var step: Int = 0
    public private(set) var m: [Float]
    public private(set) var v: [Float]

    public init(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
        m = [Float](repeating: 0, count: parameterCount)
        v = [Float](repeating: 0, count: parameterCount)
    }

    /// Restores moments and step (checkpoint resume).
    public func restore(step: Int, m: [Float], v: [Float]) throws {
        guard m.count == self.m.count, v.count == self.v.count else {
            throw TrainingError.checkpoint("optimizer moments have \(m.count) values, the model has \(self.m.count) parameters")
        }
        self.step = step
        self.m = m
        self.v = v
    }

    /// One update of every parameter from `params.grads` with learning rate `lr`.
    public func update(_ params: ParameterSet, lr: Float) {
        step += 1
        let bc1 = 1 - Float(pow(Double(beta1), Double(step)))
        let bc2 = 1 - Float(pow(Double(beta2), Double(step)))
        let stepSize = lr / bc1
        let vals = params.values.baseAddress!, grads = params.grads.baseAddress!
        m.withUnsafeMutableBufferPointer { mp in
            v.withUnsafeMutableBufferPointer { vp in
                for slot in params.slots {
                    let o = slot.offset
                    adamwStep(values: vals + o, grads: grads + o, m: mp.baseAddress! + o, v: vp.baseAddress! + o, count: slot.count,
                              stepSize: stepSize, decay: slot.decay ? 1 - lr * weightDecay : 1,
                              beta1: beta1, beta2: beta2, eps: eps, bc2Sqrt: bc2.squareRoot())
                }
            }
        }
    }
}

/// Global L2 norm of all gradients (Double accumulation).
public func gradientNorm(_ params: ParameterSet) -> Double {
    sumOfSquares(params.grads.baseAddress!, count: params.grads.count).squareRoot()
}

/// Scales gradients so their global norm is at most `maxNorm` (torch's clip_grad_norm_);
/// returns the norm before clipping (`norm`, when the caller has it already).
@discardableResult
public func clipGradients(_ params: ParameterSet, maxNorm: Float, norm given: Double? = nil) -> Double {
    let norm = given ?? gradientNorm(params)
    guard maxNorm > 0 else { return norm }
    let coef = Float(Double(maxNorm) / (norm + 1e-6))
    if coef < 1 { Kernels.scale(params.grads.baseAddress!, count: params.grads.count, by: coef) }
    return norm
}

/// Warmup then cosine decay: linear from 0 to `lr` over `warmup` steps, cosine down to
/// `lr * minRatio` at `total` steps.
public struct LRSchedule: Sendable, Equatable {
    public var lr: Float
    public var warmup: Int
    public var total: Int
    public var minRatio: Float

    public init(lr: Float, warmup: Int, total: Int, minRatio: Float = 0.1) {
        self.lr = lr
        self.warmup = warmup
        self.total = total
        self.minRatio = minRatio
    }

    /// Learning rate at 0-based step `s`.
    public func at(_ s: Int) -> Float {
        if s < warmup { return lr * Float(s + 1) / Float(warmup) }
        let span = max(total - warmup, 1)
        let progress = min(1, Float(s - warmup) / Float(span))
        let cosine = 0.5 * (1 + cos(Float.pi * progress))
        return lr * (minRatio + (1 - minRatio) * cosine)
    }
}

/// A training run failed; names the file, key or rank.
public enum TrainingError: Error, CustomStringConvertible {
    case data(String)
    case checkpoint(String)
    case config(String)
    case interrupted(step: Int)
    /// A loss or gradient norm that is NaN or infinite: the step's update was not applied.
    case nonFinite(label: String, step: Int, detail: String, checkpoint: String?)

    public var description: String {
        switch self {
        case .data(let s): return "data: \(s)"
        case .checkpoint(let s): return "checkpoint: \(s)"
        case .config(let s): return s
        case .interrupted(let step): return "interrupted at step \(step); checkpoint written, continue with --resume"
        case let .nonFinite(label, step, detail, checkpoint):
            return "\(label): non-finite loss or gradient at step \(step) (\(detail)); stopped before updating the weights. "
                + (checkpoint.map { "The last good checkpoint is kept in \($0). " } ?? "No checkpoint was written. ")
                + "Try a lower learning rate, a higher temperature, or check the inputs for NaN."
        }
    }
}
