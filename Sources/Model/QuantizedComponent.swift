import Kernels
import Tensor

/// A weight form stored in ggml's quantized blocks (Q8_0, Q4_0): any `QuantizableForm` (dense or
/// masked, low rank, Kronecker) whose matrices are kept as codes and fp16 scales, 32 weights per
/// block along each matrix's input axis.
///
/// The inner form's parameters stay in the `ParameterSet` as F32 master weights. Every pass runs
/// the inner form on the grid: the current blocks dequantized, into a private parameter set of
/// the same layout. The blocks are the masters quantized by ggml's reference rule, except that
/// codes a method chose (GPTQ) are kept for as long as the masters sit exactly on their grid.
/// Gradients of the grid go to the masters unchanged (the straight-through estimator), so a
/// distillation trains the masters through the quantizer; what is saved is always the grid.
///
/// Stored as `<matrix>.q8_0` / `<matrix>.q4_0` (U8 `[rows, row bytes]`, ggml's block layout, rows
/// the matrix's outputs), the inner form's other parameters (Kronecker scales) as floats, and a
/// masked weight's `<name>.bitmask`.
public final class QuantizedComponent: WeightComponent {
    public static let kind = "quantized"
    public let inner: QuantizableForm
    public let format: QuantFormat
    /// One quantized matrix: an inner parameter of shape [a, b] as `rows` block rows of `cols`
    /// weights (cols along `axis`, a multiple of 32).
    public struct Matrix: Sendable {
        public let name: String, shape: [Int], axis: Int
        public var rows: Int { shape[1 - axis] }
        public var cols: Int { shape[axis] }
    }
    public let matrices: [Matrix]
    /// Each matrix's current blocks (`rows · cols / 32` blocks, row after row).
    public private(set) var blocks: [String: [UInt8]] = [:]
    /// The inner form's parameters on the grid, with gradients while training.
    private var grid: ParameterSet?

    /// `inner` of layer `layer` quantized to `format`. Blocks run along each matrix's input axis,
    /// or the other one for the embedding (`transposed`: its head multiplies by Wᵀ). Throws,
    /// naming the layer and matrix, when that axis is not a multiple of 32.
    public init(_ inner: QuantizableForm, format: QuantFormat, layer: String, transposed: Bool) throws {
        self.inner = inner
        self.format = format
        let shapes = Dictionary(inner.parameters.map { ($0.name, $0.shape) }, uniquingKeysWith: { a, _ in a })
        matrices = try inner.quantizableMatrices.map { m in
            let shape = shapes[m.name]!, axis = transposed ? 1 - m.inputAxis : m.inputAxis
            guard shape.count == 2, shape[axis] % QuantFormat.blockSize == 0 else {
                throw ModelError.input("\(m.name) has \(shape[axis]) inputs per output (shape \(shape)), not a multiple of "
                                       + "\(QuantFormat.blockSize): \(format.name) cannot hold it (leave the layer out with `skip`)")
            }
            return Matrix(name: m.name, shape: shape, axis: axis)
        }
    }

    public var inFeatures: Int { inner.inFeatures }
    public var outFeatures: Int { inner.outFeatures }
    public var parameters: [(name: String, shape: [Int])] { inner.parameters }
    public var counts: (stored: Int, nonZero: Int) { inner.counts }
    public var summary: String { "\(inner.summary) \(format.name)" }
    public var maskedParts: [Maskable] { inner.maskedParts }
    public var configEntry: [String: JSONValue] { ["kind": .string(Self.kind), "format": .string(format.rawValue), "inner": .object(inner.configEntry)] }

    /// `{"kind": "quantized", "format": "q8_0" | "q4_0", "inner": {a quantizable form's entry}}`.
    public static func decode(_ entry: [String: JSONValue], layer: String, inFeatures: Int, outFeatures: Int, at: String) throws -> QuantizedComponent {
        guard let f = entry["format"]?.stringValue, let format = QuantFormat(rawValue: f) else {
            throw ModelError.input("\(at): quantized needs 'format' \(QuantFormat.allCases.map(\.rawValue).joined(separator: " or ")), got \(entry["format"].map { "\($0)" } ?? "nothing")")
        }
        guard let i = entry["inner"]?.objectValue else { throw ModelError.input("\(at): quantized needs its 'inner' form") }
        guard let inner = try decodeWeightComponent(i, layer: layer, inFeatures: inFeatures, outFeatures: outFeatures, at: at) as? QuantizableForm else {
            throw ModelError.input("\(at): a \(i["kind"]?.stringValue ?? "?") weight cannot be quantized")
        }
        do { return try QuantizedComponent(inner, format: format, layer: layer, transposed: layer == "wte") }
        catch let e as ModelError { throw ModelError.input("\(at): \(e)") }
    }

    // MARK: - Blocks and grid

    /// Quantizes matrix `m` of `values` (its parameter, row-major) by ggml's rule.
    func quantize(_ m: Matrix, from values: UnsafePointer<Float>) -> [UInt8] {
        var rows = [Float](repeating: 0, count: m.rows * m.cols)
        gatherRows(m, from: values, into: &rows)
        var out = [UInt8](repeating: 0, count: format.bytes(rows.count))
        out.withUnsafeMutableBytes { format.quantize(rows, count: rows.count, into: $0.baseAddress!) }
        return out
    }

    /// The matrix as block rows (its transpose when blocks run along axis 0).
    private func gatherRows(_ m: Matrix, from p: UnsafePointer<Float>, into rows: inout [Float]) {
        let (a, b) = (m.shape[0], m.shape[1])
        if m.axis == 1 { rows.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: p, count: a * b) }; return }
        for i in 0..<a { for j in 0..<b { rows[j * a + i] = p[i * b + j] } }
    }

    /// Writes the dequantized blocks of `m` into its parameter `p`.
    func dequantize(_ m: Matrix, into p: UnsafeMutablePointer<Float>) {
        var rows = [Float](repeating: 0, count: m.rows * m.cols)
        blocks[m.name]!.withUnsafeBytes { format.dequantize($0.baseAddress!, count: rows.count, into: &rows) }
        let (a, b) = (m.shape[0], m.shape[1])
        if m.axis == 1 { p.update(from: rows, count: a * b); return }
        for i in 0..<a { for j in 0..<b { p[i * b + j] = rows[j * a + i] } }
    }

    /// Sets matrix `name`'s blocks (a method's codes, e.g. GPTQ's) and, with `fill`, puts the
    /// masters on them (a model in node-shared memory has them there already).
    public func setBlocks(_ name: String, _ bytes: [UInt8], params: ParameterSet, fill: Bool = true) {
        guard let m = matrices.first(where: { $0.name == name }) else { preconditionFailure("no quantized matrix \(name)") }
        precondition(bytes.count == format.bytes(m.rows * m.cols), "blocks of \(name): \(bytes.count) bytes")
        blocks[name] = bytes
        if fill { dequantize(m, into: params.value(name)) }
    }

    /// Quantizes every matrix from the masters by ggml's rule and puts the masters on the grid
    /// (round to nearest, the `rtn` method).
    public func quantizeToNearest(params: ParameterSet) {
        for m in matrices {
            blocks[m.name] = quantize(m, from: params.value(m.name))
            dequantize(m, into: params.value(m.name))
        }
    }

    /// The grid for the current masters: kept while the masters sit on it; quantized again by
    /// ggml's rule for the matrices whose masters moved (a distillation step).
    func currentGrid(_ params: ParameterSet) -> ParameterSet {
        let g = grid ?? ParameterSet(layout: inner.parameters.map { ($0.name, $0.shape, true) })
        grid = g
        let quantized = Set(matrices.map(\.name))
        for p in inner.parameters where !quantized.contains(p.name) {
            g.value(p.name).update(from: params.value(p.name), count: g.slot(p.name).count)
        }
        for m in matrices {
            let n = m.rows * m.cols, master = params.value(m.name), onGrid = g.value(m.name)
            if blocks[m.name] == nil { blocks[m.name] = quantize(m, from: master) } else {
                dequantize(m, into: onGrid)
                if (0..<n).allSatisfy({ master[$0] == onGrid[$0] }) { continue }
                blocks[m.name] = quantize(m, from: master)
            }
            dequantize(m, into: onGrid)
        }
        return g
    }

    /// Adds the grid's gradients to the masters' (straight through) and clears them.
    private func passGradients(_ g: ParameterSet, to params: ParameterSet) {
        for p in inner.parameters {
            let n = g.slot(p.name).count
            add(g.grad(p.name), into: params.grad(p.name), count: n)
            g.grad(p.name).update(repeating: 0, count: n)
        }
    }

    // MARK: - Passes: the inner form on the grid

    public func savedFloats(rows N: Int) -> Int { inner.savedFloats(rows: N) }
    public func scratchFloats(rows N: Int) -> Int { inner.scratchFloats(rows: N) }

    public func forward(x: UnsafePointer<Float>, N: Int, out: UnsafeMutablePointer<Float>, params: ParameterSet, buffers: ComponentBuffers) {
        inner.forward(x: x, N: N, out: out, params: currentGrid(params), buffers: buffers)
    }

    public func backward(x: UnsafePointer<Float>, dout: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, accumulate: Bool,
                         N: Int, params: ParameterSet, buffers: ComponentBuffers) {
        let g = grid ?? currentGrid(params)
        inner.backward(x: x, dout: dout, dx: dx, accumulate: accumulate, N: N, params: g, buffers: buffers)
        passGradients(g, to: params)
    }

    public func multiplyTransposed(_ x: UnsafePointer<Float>, N: Int, into y: UnsafeMutablePointer<Float>, accumulate: Bool,
                                   params: ParameterSet, scratch: UnsafeMutablePointer<Float>) {
        inner.multiplyTransposed(x, N: N, into: y, accumulate: accumulate, params: currentGrid(params), scratch: scratch)
    }

    public func gatherRows(_ ids: UnsafeBufferPointer<Int32>, into dst: UnsafeMutablePointer<Float>, params: ParameterSet,
                           scratch: UnsafeMutablePointer<Float>) {
        inner.gatherRows(ids, into: dst, params: currentGrid(params), scratch: scratch)
    }

    public func gatherRowsBackward(_ ids: UnsafeBufferPointer<Int32>, _ d: UnsafePointer<Float>, params: ParameterSet,
                                   scratch: UnsafeMutablePointer<Float>) {
        let g = grid ?? currentGrid(params)
        inner.gatherRowsBackward(ids, d, params: g, scratch: scratch)
        passGradients(g, to: params)
    }

    public func denseWeight(params: ParameterSet) -> Tensor { inner.denseWeight(params: currentGrid(params)) }

    /// Whether every matrix's blocks still hold its masters exactly (checked row by row, without
    /// a grid copy): then packing takes the blocks as they are.
    func blocksHoldMasters(_ params: ParameterSet) -> Bool {
        matrices.allSatisfy { m in
            guard let b = blocks[m.name] else { return false }
            var rows = [Float](repeating: 0, count: m.rows * m.cols)
            gatherRows(m, from: params.value(m.name), into: &rows)
            var row = [Float](repeating: 0, count: m.cols)
            return b.withUnsafeBytes { raw in
                (0..<m.rows).allSatisfy { r in
                    format.dequantize(raw.baseAddress! + r * format.bytes(m.cols), count: m.cols, into: &row)
                    return (0..<m.cols).allSatisfy { row[$0] == rows[r * m.cols + $0] }
                }
            }
        }
    }

    /// The blocks as they are (ggml's kernels read them in registers); a Kronecker inner form
    /// on its (small) dequantized factors.
    public func packed(params: ParameterSet, precision: PackedPrecision) throws -> PackedOperator {
        let grid = inner is KroneckerComponent || !blocksHoldMasters(params) ? currentGrid(params) : params
        func rows(_ name: String) -> PackedRows {
            let m = matrices.first { $0.name == name }!
            let b = PackedBuffer<UInt8>(blocks[name]!)
            return Packing.quantized(UnsafeRawPointer(b.pointer), format: format, rows: m.rows, cols: m.cols, owner: b)
        }
        switch inner {
        case let d as DenseComponent: return rows(d.weightName)
        case let l as LowRankComponent: return PackedLowRank(first: rows(l.w0Name), second: rows(l.w1Name))
        default: return try inner.packed(params: grid, precision: .f32)
        }
    }

    /// The grid's copy of the inner parameters (and their gradients while training).
    public func residentBytes(training: Bool) -> Int {
        inner.residentBytes(training: training) + (training ? 8 : 4) * inner.parameters.reduce(0) { $0 + $1.shape.reduce(1, *) }
            + matrices.reduce(0) { $0 + format.bytes($1.rows * $1.cols) }
    }

    public func storedBytes(valueBytes: Int) -> Int {
        let quantized = Set(matrices.map(\.name))
        return matrices.reduce(0) { $0 + format.bytes($1.rows * $1.cols) }
            + inner.parameters.filter { !quantized.contains($0.name) }.reduce(0) { $0 + valueBytes * $1.shape.reduce(1, *) }
            + inner.maskedParts.reduce(0) { $0 + ($1.mask.map { ($0.count + 7) / 8 } ?? 0) }
    }
}
