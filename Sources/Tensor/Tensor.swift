/// A dense Float32 tensor: a shape and row-major contiguous storage.
public struct Tensor: Equatable, Sendable {
    /// Dimensions, outermost first.
    public private(set) var shape: [Int]
    /// Row-major elements; `data.count == shape.reduce(1, *)`.
    public var data: [Float]

    /// A tensor with the given shape and elements (counts must agree).
    public init(shape: [Int], data: [Float]) throws {
        guard let count = Tensor.elementCount(shape), count == data.count else {
            let holds = Tensor.elementCount(shape).map { "holds \($0) elements" } ?? "is not a valid shape"
            throw TensorError.shape("Tensor(shape:data:)", "shape \(shape) \(holds), data has \(data.count)")
        }
        self.shape = shape
        self.data = data
    }

    /// The number of elements of `shape`, or nil when a dimension is negative or the product
    /// overflows Int (shapes read from files; a zero dimension makes the others harmless).
    public static func elementCount(_ shape: [Int]) -> Int? {
        guard shape.allSatisfy({ $0 >= 0 }) else { return nil }
        if shape.contains(0) { return 0 }
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// Internal unchecked initializer for results whose shape is known to be right.
    @usableFromInline init(uncheckedShape shape: [Int], data: [Float]) {
        self.shape = shape
        self.data = data
    }

    /// A tensor filled with `value`.
    public init(shape: [Int], repeating value: Float = 0) {
        self.shape = shape
        self.data = [Float](repeating: value, count: shape.reduce(1, *))
    }

    /// Gaussian entries N(0, std^2) from a seeded generator.
    public static func randomNormal(shape: [Int], std: Float = 1, seed: UInt64) -> Tensor {
        var t = Tensor(shape: shape)
        t.data.withUnsafeMutableBufferPointer { fillNormal($0.baseAddress!, count: $0.count, std: std, seed: seed) }
        return t
    }

    /// Number of elements.
    public var count: Int { data.count }
    /// Rows of a 2-D tensor.
    public var rows: Int { shape[0] }
    /// Columns of a 2-D tensor.
    public var cols: Int { shape[shape.count - 1] }

    /// Element (i, j) of a 2-D tensor.
    public subscript(i: Int, j: Int) -> Float {
        get { data[i * shape[1] + j] }
        set { data[i * shape[1] + j] = newValue }
    }

    /// The same elements viewed with another shape of equal size.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        guard newShape.reduce(1, *) == count else {
            throw TensorError.shape("reshaped", "cannot view \(shape) (\(count) elements) as \(newShape)")
        }
        return Tensor(uncheckedShape: newShape, data: data)
    }

    /// Transpose of a 2-D tensor.
    public func transposed() throws -> Tensor {
        try require2D("transposed")
        let m = shape[0], n = shape[1]
        var out = [Float](repeating: 0, count: count)
        data.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                transpose(src.baseAddress!, rows: m, cols: n, into: dst.baseAddress!)
            }
        }
        return Tensor(uncheckedShape: [n, m], data: out)
    }

    /// Throws unless the tensor is 2-D.
    public func require2D(_ op: String) throws {
        guard shape.count == 2 else { throw TensorError.shape(op, "expected a 2-D tensor, got shape \(shape)") }
    }
}

/// Copies a row-major `rows x cols` matrix into its transpose (`cols x rows`), cache-blocked.
public func transpose(_ src: UnsafePointer<Float>, rows m: Int, cols n: Int, into dst: UnsafeMutablePointer<Float>) {
    let block = 32
    var i0 = 0
    while i0 < m {
        let i1 = min(i0 + block, m)
        var j0 = 0
        while j0 < n {
            let j1 = min(j0 + block, n)
            for i in i0..<i1 {
                for j in j0..<j1 { dst[j * m + i] = src[i * n + j] }
            }
            j0 = j1
        }
        i0 = i1
    }
}
