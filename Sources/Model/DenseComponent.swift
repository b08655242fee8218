import Kernels
import Tensor

/// A dense weight `[in, out]`, optionally with a frozen pruning mask (unstructured or N:M). A
/// masked weight is stored as `<name>.bitmask` (one bit per weight) and `<name>.values` (the kept
/// values).
public final class DenseComponent: Maskable, QuantizableForm {
    public static let kind = "dense"
    public let inFeatures: Int
    public let outFeatures: Int
    /// The parameter holding the weight (`<prefix>.weight`, or `<prefix>.sparse` for a residual).
    public let weightName: String
    /// The frozen pruning mask; nil for an unpruned weight.
    public var mask: BitMask?
    /// The mask's N:M structure (n kept in every m consecutive inputs), when it was pruned so:
    /// recorded in config.json, so a 2:4 weight packs as 2:4 after loading.
    public var nm: (n: Int, m: Int)?

    public init(weightName: String, inFeatures: Int, outFeatures: Int, mask: BitMask? = nil) {
        self.weightName = weightName
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.mask = mask
    }

    public var parameters: [(name: String, shape: [Int])] { [(weightName, [inFeatures, outFeatures])] }
    public var quantizableMatrices: [(name: String, inputAxis: Int)] { [(weightName, 0)] }
    public var summary: String { mask == nil ? "dense" : "sparse" }

    public var configEntry: [String: JSONValue] {
        var o: [String: JSONValue] = ["kind": .string(Self.kind), "sparse": .bool(mask != nil)]
        if weightName.hasSuffix(".sparse") { o["name"] = .string("sparse") }
        if let nm, mask != nil { o["nm"] = .array([.number(Double(nm.n)), .number(Double(nm.m))]) }
        return o
    }

    /// `{"kind": "dense", "sparse": bool, "name": "weight" | "sparse"}` (the mask itself is the
    /// weights file's bitmask).
    public static func decode(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> DenseComponent {
        let sub = entry["name"]?.stringValue ?? "weight"
        guard sub == "weight" || sub == "sparse" else { throw ModelError.input("\(at): dense name must be 'weight' or 'sparse'") }
        let d = DenseComponent(weightName: "\(layer).\(sub)", inFeatures: inFeatures, outFeatures: outFeatures)
        if let v = entry["nm"] {
            guard let a = v.arrayValue?.compactMap(\.intValue), a.count == 2, a[0] >= 1, a[0] < a[1], inFeatures % a[1] == 0 else {
                throw ModelError.input("\(at): nm must be [n, m] with 1 <= n < m and m dividing the \(inFeatures) inputs, got \(v)")
            }
            d.nm = (a[0], a[1])
        }
        return d
    }

    public func savedFloats(rows N: Int) -> Int { 0 }

    public func packed(params: ParameterSet, precision: PackedPrecision) throws -> PackedOperator {
        let w = UnsafePointer(params.value(weightName))
        guard let mask else {
            return precision == .f32 ? PackedHF(w, inFeatures: inFeatures, outFeatures: outFeatures, owner: params)
                                     : Packing.rows(w, inFeatures: inFeatures, outFeatures: outFeatures, precision: precision)
        }
        let is24 = nm.map { $0.n == 2 && $0.m == 4 } ?? false
        return try Packing.sparse(w, mask: mask, inFeatures: inFeatures, outFeatures: outFeatures, nm24: is24, precision: precision)
    }
    public func scratchFloats(rows N: Int) -> Int { 0 }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet, buffers: ComponentBuffers) {
        sgemm(m: N, n: outFeatures, k: inFeatures, a: x, b: params.value(weightName), beta: 1, c: out)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet, buffers: ComponentBuffers) {
        // dW [in, out] += xᵀ [in, N] · dY [N, out]
        sgemm(transA: true, m: inFeatures, n: outFeatures, k: N, a: x, b: dout, beta: 1, c: params.grad(weightName))
        // dx [N, in] (+)= dY [N, out] · Wᵀ
        if let dx {
            sgemm(transB: true, m: N, n: inFeatures, k: outFeatures, a: dout, b: params.value(weightName),
                  beta: accumulate ? 1 : 0, c: dx)
        }
    }

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                                   params: ParameterSet, scratch: UnsafeMutablePointer<Float>) {
        // y [N, in] (+)= x [N, out] · Wᵀ
        sgemm(transB: true, m: N, n: inFeatures, k: outFeatures, a: x, b: params.value(weightName), beta: accumulate ? 1 : 0, c: y)
    }

    public func gatherRows(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                           scratch: UnsafeMutablePointer<Float>) {
        let w = UnsafePointer(params.value(weightName)), n = outFeatures
        parallelFor(ids.count, minChunk: 64) { rows in
            for k in rows { add(w + Int(ids[k]) * n, into: dst + k * n, count: n) }
        }
    }

    public func gatherRowsBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                                   scratch: UnsafeMutablePointer<Float>) {
        // In lookup order (a token repeated in the batch sums its gradients deterministically).
        let g = params.grad(weightName), n = outFeatures
        for k in ids.indices { add(d + k * n, into: g + Int(ids[k]) * n, count: n) }
    }

    public func denseWeight(params: ParameterSet) -> Tensor { params.tensor(weightName) }

    public var counts: (stored: Int, nonZero: Int) {
        let n = inFeatures * outFeatures
        guard let mask else { return (n, n) }
        return (mask.kept, mask.kept)
    }

    // MARK: - Storage: a masked weight as bitmask + kept values

    public func store(in writer: inout SafeTensorsWriter, key: (String) -> String, params: ParameterSet, dtype: SafeTensorsDType) {
        let key = key(weightName), p = UnsafePointer(params.value(weightName))
        guard let mask else {
            writer.add(key, shape: [inFeatures, outFeatures], pointer: p, dtype: dtype, owner: params)
            return
        }
        let values = (0..<mask.count).filter { mask[$0] }.map { p[$0] }
        writer.add(key + ".bitmask", shape: [(mask.count + 7) / 8], bytes: mask.bytes, dtype: .u8)
        writer.add(key + ".values", shape: [values.count], values: values, dtype: dtype)
    }

    public func checkStored(in weights: WeightFiles, key: (String) -> String) throws {
        let key = key(weightName), n = inFeatures * outFeatures
        if weights.entries[key] != nil || weights.entries[key + ".bitmask"] == nil {
            return try weights.expect(key, shape: [inFeatures, outFeatures])
        }
        guard weights.entries[key + ".values"] != nil else { throw FileError.format(weights.url.path, "tensor '\(key).values' is missing") }
        let bytes = weights.entries[key + ".bitmask"]!.range.count
        guard bytes == (n + 7) / 8 else {
            throw FileError.format(weights.url.path, "tensor '\(key).bitmask' has \(bytes) bytes, expected \((n + 7) / 8) for shape \([inFeatures, outFeatures])")
        }
    }

    public func load(from weights: WeightFiles, key: (String) -> String, into params: ParameterSet, fill: Bool) throws {
        let key = key(weightName), n = inFeatures * outFeatures, path = weights.url.path
        guard weights.entries[key] == nil, weights.entries[key + ".bitmask"] != nil else {
            if fill { try weights.readFloats(key, into: params.value(weightName)) }
            return
        }
        guard let m = BitMask(bytes: try weights.bytes(key + ".bitmask"), count: n) else {
            throw FileError.format(path, "tensor '\(key).bitmask' does not match shape \([inFeatures, outFeatures])")
        }
        let stored = weights.entries[key + ".values"]!.count
        guard stored == m.kept else { throw FileError.format(path, "tensor '\(key).values' has \(stored) values, the bitmask sets \(m.kept)") }
        mask = m
        guard fill else { return }
        let values = try weights.floats(key + ".values"), dst = params.value(weightName)
        var j = 0
        for i in 0..<n where m[i] { dst[i] = values[j]; j += 1 }
        m.apply(to: dst)
    }
}

/// dst[0..<n] += src[0..<n].
@inline(__always)
func add(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count n: Int) {
    for c in 0..<n { dst[c] += src[c] }
}
