/// Norms of a tensor.
extension Tensor {
    /// Frobenius norm, accumulated in Double.
    public var frobeniusNorm: Float {
        var s = 0.0
        data.withUnsafeBufferPointer { p in for x in p { s += Double(x) * Double(x) } }
        return Float(s.squareRoot())
    }
}
