/// Norms of a tensor.
extension Tensor {
    /// Frobenius norm, accumulated in Double.
    public var frobeniusNorm: Float {
        var s = 0.0
        data.withUnsafeBufferPointer { p in for x in p { s += Double(x) * Double(x) } }
        return Float(s.squareRoot())
    }
}

/// Max over elements of `|a - b| / max(|b|, floor)`: the relative error used by the tests.
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
