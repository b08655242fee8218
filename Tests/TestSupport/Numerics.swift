import Kernels
import Model
import Training

/// Max over elements of `|a - b| / max(|b|, floor)`: the relative error the tests compare with.
public func maxRelativeError(_ a: [Float], _ b: [Float], floor: Float = 1e-6) -> Float {
    precondition(a.count == b.count, "maxRelativeError: \(a.count) vs \(b.count) elements")
    var worst: Float = 0
    for i in a.indices { worst = max(worst, abs(a[i] - b[i]) / max(abs(b[i]), floor)) }
    return worst
}

/// Max absolute element-wise difference.
public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count, "maxAbsDifference: \(a.count) vs \(b.count) elements")
    var worst: Float = 0
    for i in a.indices { worst = max(worst, abs(a[i] - b[i])) }
    return worst
}

/// Scales all of a model's gradients so their global norm is at most `maxNorm` (torch's
/// clip_grad_norm_, with the coefficient the trainer uses); returns the norm before clipping.
/// (The trainer clips each rank's owned ranges itself.)
@discardableResult
public func clipGradients(_ params: ParameterSet, maxNorm: Float) -> Double {
    let norm = sumOfSquares(params.grads.baseAddress!, count: params.grads.count).squareRoot()
    let coef = clipCoefficient(norm: norm, maxNorm: maxNorm)
    if coef < 1 { Kernels.scale(params.grads.baseAddress!, count: params.grads.count, by: coef) }
    return norm
}
