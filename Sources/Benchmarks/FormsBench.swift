import CKernels
import Compression
import Foundation
import Kernels
import Model
import Tensor

/// `squeeze bench forms`: each packed weight form on GPT-2's layer shapes, decode (one row: a
/// GEMV, memory bound) and prefill (many rows: GEMMs, compute bound), against dense F32 in the
/// same run, against its bytes bound (its bytes at the read bandwidth measured in the same run)
/// and its FLOP bound (its FLOPs at the sgemm peak measured in the same run).
public struct FormsBenchRow: Codable, Sendable {
    public var shape: [Int]
    public var form: String
    public var bytes: Int
    public var flops: Double
    public var decodeSeconds: Double, prefillSeconds: Double
    /// Dense F32's time over this form's (> 1: faster).
    public var decodeSpeedup: Double, prefillSpeedup: Double
    /// Bytes bound / measured decode time, FLOP bound / measured prefill time (1: at the bound).
    public var decodeOfBytesBound: Double, prefillOfFlopBound: Double
}

public struct FormsBenchResult: Codable, Sendable {
    public var threads: Int
    public var readGBps: Double
    public var sgemmGflops: Double
    public var prefillRows: Int
    public var rows: [FormsBenchRow]
}

/// The forms, packed from one random [in, out] weight (HF layout).
func benchForms(_ w: Tensor) throws -> [(String, PackedOperator)] {
    let (n, m) = (w.shape[0], w.shape[1])
    let p = ParameterSet([("w", w, true)])
    let dense = DenseComponent(weightName: "w", inFeatures: n, outFeatures: m)
    var forms: [(String, PackedOperator)] = [("dense f32", try dense.packed(params: p, precision: .f32)),
                                             ("dense bf16", try dense.packed(params: p, precision: .bf16))]
    let sparse = DenseComponent(weightName: "w", inFeatures: n, outFeatures: m, mask: BitMask(Pruning.magnitudeMask(w.data, sparsity: 0.5)))
    forms += [("50% sparse bf16", try sparse.packed(params: p, precision: .bf16))]
    let nm = DenseComponent(weightName: "w", inFeatures: n, outFeatures: m, mask: BitMask(try Pruning.nmMask(w.data, rows: n, cols: m)))
    nm.nm = (2, 4)
    forms += [("2:4 bf16", try nm.packed(params: p, precision: .bf16))]
    let r = max(1, n * m / (2 * (n + m)))
    let f = try LowRank.factorize(w, rank: r)
    let lr = LowRankComponent(layer: "l", inFeatures: n, outFeatures: m, rank: r)
    forms += [("low rank 0.5x", try lr.packed(params: ParameterSet([(lr.w0Name, f.w0, true), (lr.w1Name, f.w1, true)]), precision: .f32))]
    if let (shape, terms) = NearestKronecker.autoCandidates(rows: n, cols: m, terms: nil, budget: n * m / 2, perTermExtra: 0, maxCandidates: 1).first {
        let k = KroneckerComponent(prefix: "k", shape: shape, terms: terms)
        let kp = ParameterSet(layout: k.parameters.map { ($0.name, $0.shape, true) })
        fillNormal(kp.values.baseAddress!, count: kp.count, std: 0.02, seed: 5)
        forms += [("kronecker 0.5x", try k.packed(params: kp, precision: .f32))]
    }
    for format in QuantFormat.allCases {
        let q = try QuantizedComponent(DenseComponent(weightName: "w", inFeatures: n, outFeatures: m), format: format, layer: "w", transposed: false)
        let qp = ParameterSet([("w", w, true)])
        q.quantizeToNearest(params: qp)
        forms += [(format.rawValue, try q.packed(params: qp, precision: .f32))]
    }
    let sq = try QuantizedComponent(sparse, format: .q4_0, layer: "w", transposed: false)
    let sqp = ParameterSet([("w", w, true)])
    sparse.applyMask(params: sqp)
    sq.quantizeToNearest(params: sqp)
    forms += [("50% + q4_0", try sq.packed(params: sqp, precision: .f32))]
    return forms
}

public func runFormsBench(shapes: [[Int]], prefillRows N: Int = 1024, repeats: Int = 5) throws -> FormsBenchResult {
    let readGBps = measureReadBandwidth(), peak = measureSgemmPeak()
    var rows: [FormsBenchRow] = []
    for shape in shapes {
        let w = Tensor.randomNormal(shape: shape, seed: 11)
        let forms = try benchForms(w)
        let x = Tensor.randomNormal(shape: [N, shape[0]], seed: 12)
        var measured: [(String, PackedOperator, Double, Double)] = []
        for (name, op) in forms {
            var y = [Float](repeating: 0, count: N * op.outputs)
            var scratch = [Float](repeating: 0, count: op.scratchFloats(rows: N))
            func run(_ rows: Int) {
                x.data.withUnsafeBufferPointer { xp in y.withUnsafeMutableBufferPointer { yp in scratch.withUnsafeMutableBufferPointer { sp in
                    op.apply(xp.baseAddress!, N: rows, into: yp.baseAddress!, accumulate: false, scratch: sp.baseAddress!)
                } } }
            }
            // Decode: many calls per timing, so a call's bytes are read from memory (not cache) only
            // for matrices larger than the caches, as in a real model.
            let decode = bestTime(repeats: repeats) { for _ in 0..<8 { run(1) } } / 8
            let prefill = bestTime(repeats: max(2, repeats / 2)) { run(N) }
            measured.append((name, op, decode, prefill))
        }
        let base = measured[0]
        for (name, op, decode, prefill) in measured {
            let flops = op.flops
            rows.append(FormsBenchRow(shape: shape, form: name, bytes: op.bytes, flops: flops, decodeSeconds: decode, prefillSeconds: prefill,
                                      decodeSpeedup: base.2 / decode, prefillSpeedup: base.3 / prefill,
                                      decodeOfBytesBound: Double(op.bytes) / (readGBps * 1e9) / decode,
                                      prefillOfFlopBound: flops * Double(N) / (peak * 1e9) / prefill))
        }
    }
    return FormsBenchResult(threads: BLAS.threads, readGBps: readGBps, sgemmGflops: peak, prefillRows: N, rows: rows)
}

/// Read bandwidth of this rank's threads over a buffer far larger than the caches (GB/s, best of 3).
public func measureReadBandwidth(bytes: Int = 1 << 30) -> Double {
    let n = bytes / 4
    let buffer = PackedBuffer<Float>(count: n)
    buffer.pointer.initialize(repeating: 1, count: n)
    let t = bestTime(repeats: 3) {
        parallelFor(n, minChunk: 1 << 20) { r in _ = squeeze_read_bandwidth_probe(buffer.pointer + r.lowerBound, r.count) }
    }
    return Double(bytes) / t / 1e9
}
