import Foundation

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
