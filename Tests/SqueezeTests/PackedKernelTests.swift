import CKernels
import Foundation
import Model
import TestSupport
import XCTest

/// The C kernels of packed weight forms (Sources/CKernels) against plain Swift/Double references,
/// at EVERY ISA level this machine has (squeeze_set_isa caps the level; the AVX-512 bitmask-BF16
/// kernels also run without VBMI2), so the fallbacks are tested everywhere. scripts/test.sh runs
/// this class again under SQUEEZE_ISA=avx2 and SQUEEZE_ISA=generic.
///
/// GEMV results may differ between levels in summation order only: each output is checked to
/// 1e-6 * sqrt(cols) * sum_c |W[r, c] x[c]| (a dropped or wrong term is far larger at these
/// sizes). Conversions, quantizers and decode_rows must be bit exact.
final class PackedKernelTests: XCTestCase {
    // MARK: - Helpers

    /// Runs body at every level from generic up to the one in use (detected, capped by
    /// SQUEEZE_ISA), then restores it. At AVX-512 on a VBMI2 CPU, body runs with and without VBMI2.
    func forEachPath(_ body: (String) throws -> Void) rethrows {
        squeeze_set_isa(-1)
        let top = squeeze_isa()
        defer {
            squeeze_set_isa(-1)
            squeeze_set_use_vbmi2(1)
        }
        for level in 0...top {
            squeeze_set_isa(level)
            XCTAssertEqual(squeeze_isa(), level)
            let name = String(cString: squeeze_isa_name(level))
            if level == Int32(SQUEEZE_ISA_AVX512) && squeeze_cpu_has_avx512_vbmi2() != 0 {
                for vbmi2: Int32 in [1, 0] {
                    squeeze_set_use_vbmi2(vbmi2)
                    XCTAssertEqual(squeeze_use_vbmi2(), vbmi2)
                    try body(vbmi2 == 1 ? "\(name)+vbmi2" : name)
                }
                squeeze_set_use_vbmi2(1)
            } else {
                try body(name)
            }
        }
    }

    /// A test matrix: W [rows, cols] with the given fraction of zeros, row 1 all zero when
    /// rows >= 3 (an empty row), and x [cols].
    struct Case: CustomStringConvertible {
        let rows: Int, cols: Int, sparsity: Double
        var w: [Float], x: [Float]
        var description: String { "\(rows)x\(cols) sparsity \(sparsity)" }

        init(rows: Int, cols: Int, sparsity: Double, seed: UInt64) {
            self.rows = rows; self.cols = cols; self.sparsity = sparsity
            var g = SplitMix64(seed)
            w = (0..<rows * cols).map { _ in g.uniform() < sparsity ? 0 : g.normal() }
            if rows >= 3 { for c in 0..<cols { w[cols + c] = 0 } }
            x = (0..<cols).map { _ in g.normal() }
        }
    }

    static let rowCounts = [1, 3, 5, 17]
    static let colCounts = [4, 8, 12, 32, 64, 96, 100, 200, 1024]
    static let sparsities = [0.0, 0.5, 1.0]

    func forEachCase(_ allows: (Int) -> Bool, _ body: (Case) throws -> Void) rethrows {
        var seed: UInt64 = 1
        for rows in Self.rowCounts {
            for cols in Self.colCounts where allows(cols) {
                for s in Self.sparsities {
                    seed += 1
                    try body(Case(rows: rows, cols: cols, sparsity: s, seed: seed))
                }
            }
        }
    }

    /// y = W x in Double, and sum_c |W[r, c] x[c]| per row, for rows [r0, r1).
    func reference(_ w: [Float], cols: Int, _ r0: Int, _ r1: Int, _ x: [Float]) -> (y: [Double], mag: [Double]) {
        var y = [Double](), mag = [Double]()
        for r in r0..<r1 {
            var s = 0.0, m = 0.0
            for c in 0..<cols {
                let t = Double(w[r * cols + c]) * Double(x[c])
                s += t
                m += abs(t)
            }
            y.append(s)
            mag.append(m)
        }
        return (y, mag)
    }

    func assertGemv(_ got: [Float], _ want: (y: [Double], mag: [Double]), cols: Int, _ what: String,
                    file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.y.count, what, file: file, line: line)
        for (i, g) in got.enumerated() {
            let tol = 1e-6 * Double(cols).squareRoot() * want.mag[i]
            if !(abs(Double(g) - want.y[i]) <= tol) {
                XCTFail("\(what): row \(i): \(g), want \(want.y[i]) (tolerance \(tol))", file: file, line: line)
                return
            }
        }
    }

    func assertBitwise(_ got: [Float], _ want: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.count, want.count, what, file: file, line: line)
        for i in 0..<min(got.count, want.count) where got[i].bitPattern != want[i].bitPattern {
            XCTFail("\(what): element \(i): \(got[i]) (0x\(String(got[i].bitPattern, radix: 16))), want \(want[i])", file: file, line: line)
            return
        }
    }

    /// The row ranges each kernel is run on: all rows, and a tail range starting past row 0.
    func ranges(_ rows: Int) -> [(Int, Int)] { rows >= 3 ? [(0, rows), (rows / 3 + 1, rows)] : [(0, rows)] }

    func bf16Widened(_ w: [Float]) -> [Float] { w.map { squeeze_bf16_to_fp32(squeeze_fp32_to_bf16($0)) } }

    // MARK: - Dense F32 / BF16 / F16

    func testDenseGemvAndDecodeRows() {
        forEachCase({ _ in true }) { k in
            let wh = k.w.map { squeeze_fp32_to_bf16($0) }
            let wb = bf16Widened(k.w)
            let w16 = k.w.map { squeeze_fp32_to_fp16($0) }, wf16 = w16.map { squeeze_fp16_to_fp32($0) }
            forEachPath { isa in
                for (r0, r1) in ranges(k.rows) {
                    let what = "\(isa) \(k) rows \(r0)..<\(r1)"
                    var y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_f16(w16, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(wf16, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_f16 \(what)")
                    var d16 = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_f16(w16, k.cols, r0, r1, &d16)
                    assertBitwise(d16, Array(wf16[r0 * k.cols..<r1 * k.cols]), "decode_rows_f16 \(what)")
                    y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_f32(k.w, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(k.w, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_f32 \(what)")
                    y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_bf16(wh, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(wb, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_bf16 \(what)")

                    var dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_bf16(wh, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(wb[r0 * k.cols..<r1 * k.cols]), "decode_rows_bf16 \(what)")
                    dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_f32(k.w, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(k.w[r0 * k.cols..<r1 * k.cols]), "decode_rows_f32 \(what)")
                }
            }
        }
    }

    /// HF layout: the case's W read as [in = rows, out = cols]; y[c - c0] = sum_i x'[i] W[i, c].
    func testGemvF32InOutLayout() {
        forEachCase({ _ in true }) { k in
            var g = SplitMix64(UInt64(k.rows * 1000 + k.cols))
            let xin = (0..<k.rows).map { _ in g.normal() }
            // The transpose as [cols, rows] row-major, so reference() applies.
            var t = [Float](repeating: 0, count: k.rows * k.cols)
            for i in 0..<k.rows { for c in 0..<k.cols { t[c * k.rows + i] = k.w[i * k.cols + c] } }
            forEachPath { isa in
                for (c0, c1) in [(0, k.cols), (k.cols / 3, k.cols - k.cols / 4)] where c1 > c0 {
                    var y = [Float](repeating: .nan, count: c1 - c0)
                    squeeze_gemv_f32_io(k.w, k.rows, k.cols, c0, c1, xin, &y)
                    assertGemv(y, reference(t, cols: k.rows, c0, c1, xin), cols: k.rows, "gemv_f32_io \(isa) \(k) cols \(c0)..<\(c1)")
                }
            }
        }
    }

    // MARK: - Q8_0 / Q4_0

    /// Independent dequantization: fp16 d (Swift's Float16) times the code.
    func dequantQ8(_ bytes: [UInt8]) -> [Float] {
        stride(from: 0, to: bytes.count, by: 34).flatMap { o -> [Float] in
            let d = Float(Float16(bitPattern: UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8))
            return (0..<32).map { d * Float(Int8(bitPattern: bytes[o + 2 + $0])) }
        }
    }

    func dequantQ4(_ bytes: [UInt8]) -> [Float] {
        stride(from: 0, to: bytes.count, by: 18).flatMap { o -> [Float] in
            let d = Float(Float16(bitPattern: UInt16(bytes[o]) | UInt16(bytes[o + 1]) << 8))
            let lo = (0..<16).map { d * Float(Int(bytes[o + 2 + $0] & 15) - 8) }
            let hi = (0..<16).map { d * Float(Int(bytes[o + 2 + $0] >> 4) - 8) }
            return lo + hi
        }
    }

    func quantizeQ8(_ w: [Float]) -> [squeeze_block_q8_0] {
        var b = [squeeze_block_q8_0](repeating: squeeze_block_q8_0(), count: w.count / 32)
        squeeze_quantize_q8_0(w, &b, w.count)
        return b
    }

    func quantizeQ4(_ w: [Float]) -> [squeeze_block_q4_0] {
        var b = [squeeze_block_q4_0](repeating: squeeze_block_q4_0(), count: w.count / 32)
        squeeze_quantize_q4_0(w, &b, w.count)
        return b
    }

    func bytes<T>(_ a: [T]) -> [UInt8] { a.withUnsafeBytes { Array($0) } }

    func testQuantGemvAndDecodeRows() {
        XCTAssertEqual(MemoryLayout<squeeze_block_q8_0>.stride, 34)
        XCTAssertEqual(MemoryLayout<squeeze_block_q4_0>.stride, 18)
        forEachCase({ $0 % 32 == 0 }) { k in
            let q8 = quantizeQ8(k.w), q4 = quantizeQ4(k.w)
            let d8 = dequantQ8(bytes(q8)), d4 = dequantQ4(bytes(q4))
            // The GEMVs take x quantized (int8 codes, an F32 scale per 32): the reference multiplies
            // the dequantized weights by the dequantized activations.
            let (xq, xd) = quantizedActivations(k.x)
            let xDequantized = (0..<k.cols).map { xd[$0 / 32] * Float(xq[$0]) }
            forEachPath { isa in
                for (r0, r1) in ranges(k.rows) {
                    let what = "\(isa) \(k) rows \(r0)..<\(r1)"
                    var y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_q8_0(q8, k.cols, r0, r1, xq, xd, &y)
                    assertGemv(y, reference(d8, cols: k.cols, r0, r1, xDequantized), cols: k.cols, "gemv_q8_0 \(what)")
                    y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_q4_0(q4, k.cols, r0, r1, xq, xd, &y)
                    assertGemv(y, reference(d4, cols: k.cols, r0, r1, xDequantized), cols: k.cols, "gemv_q4_0 \(what)")

                    var dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_q8_0(q8, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(d8[r0 * k.cols..<r1 * k.cols]), "decode_rows_q8_0 \(what)")
                    dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_q4_0(q4, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(d4[r0 * k.cols..<r1 * k.cols]), "decode_rows_q4_0 \(what)")
                }
                var all = [Float](repeating: .nan, count: k.w.count)
                squeeze_dequantize_q8_0(q8, &all, k.w.count)
                assertBitwise(all, d8, "dequantize_q8_0 \(isa) \(k)")
                squeeze_dequantize_q4_0(q4, &all, k.w.count)
                assertBitwise(all, d4, "dequantize_q4_0 \(isa) \(k)")
            }
        }
    }

    func quantizedActivations(_ x: [Float]) -> (codes: [Int8], scales: [Float]) {
        var codes = [Int8](repeating: 0, count: x.count), scales = [Float](repeating: 0, count: x.count / 32)
        squeeze_quantize_activations(x, &codes, &scales, x.count)
        return (codes, scales)
    }

    /// The GEMVs' activations are Q8_0 blocks with the F32 scale: the codes of the Q8_0 quantizer
    /// (bit-exact with gguf-py's, below) and its scale before fp16 rounding; a block with a NaN or
    /// an infinity makes every product it enters NaN.
    func testActivationQuantizationIsQ8_0WithF32Scales() {
        var g = SplitMix64(41)
        let x = (0..<256).map { i in i < 32 ? 0 : g.normal() * (i % 64 < 32 ? 1e-3 : 40) }
        let (codes, scales) = quantizedActivations(x)
        let q8 = quantizeQ8(x)
        for b in 0..<8 {
            XCTAssertEqual(scales[b], x[(32 * b)..<(32 * b + 32)].withContiguousStorageIfAvailable { squeeze_q8_0_scale($0.baseAddress!) }!, "block \(b)")
            XCTAssertEqual(squeeze_fp32_to_fp16(scales[b]), q8[b].d, "block \(b): ggml stores this scale rounded to fp16")
            XCTAssertEqual(Array(codes[(32 * b)..<(32 * b + 32)]), withUnsafeBytes(of: q8[b].qs) { $0.map { Int8(bitPattern: $0) } }, "block \(b)")
        }
        XCTAssertEqual(scales[0], 0, "an all-zero block")
        for bad in [Float.nan, .infinity, -.infinity] {
            var y = x
            y[70] = bad
            let (c, d) = quantizedActivations(y)
            XCTAssertTrue(d[2].isNaN, "\(bad)")
            XCTAssertEqual(d[1], scales[1])
            let w = quantizeQ4([Float](repeating: 0.5, count: 256))
            forEachPath { isa in
                var out: [Float] = [0]
                squeeze_gemv_q4_0(w, 256, 0, 1, c, d, &out)
                XCTAssertTrue(out[0].isNaN, "\(bad) \(isa)")
            }
        }
    }

    /// Our quantizers give gguf-py's bytes (which are ggml's reference quantizers') for the blocks of
    /// scripts/make_quant_reference.py, and our dequantizers its floats.
    func testQuantizersMatchGGUFReference() throws {
        let ref = try SafeTensorsFile(url: Fixtures.reference("quant_blocks.safetensors"))
        let x = try ref.floats("inputs")
        let n = x.count
        XCTAssertGreaterThanOrEqual(n / 32, 200)
        let want8 = try ref.bytes("q8_0"), want4 = try ref.bytes("q4_0")
        let deq8 = try ref.floats("q8_0_dequant"), deq4 = try ref.floats("q4_0_dequant")
        var categories: [String: [Int]] = [:]
        if let text = ref.metadata["categories"],
           let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: [Any]] {
            for (name, range) in object { categories[name] = range.map { ($0 as! NSNumber).intValue } }
        }
        XCTAssertFalse(categories.isEmpty, "fixture metadata lists its categories")
        func category(_ block: Int) -> String { categories.first { $0.value[0] <= block && block < $0.value[1] }?.key ?? "?" }

        let got8 = bytes(quantizeQ8(x)), got4 = bytes(quantizeQ4(x))
        XCTAssertEqual(got8.count, want8.count)
        XCTAssertEqual(got4.count, want4.count)
        for b in 0..<n / 32 {
            XCTAssertEqual(Array(got8[34 * b..<34 * b + 34]), Array(want8[34 * b..<34 * b + 34]), "Q8_0 block \(b) (\(category(b)))")
            XCTAssertEqual(Array(got4[18 * b..<18 * b + 18]), Array(want4[18 * b..<18 * b + 18]), "Q4_0 block \(b) (\(category(b)))")
        }
        forEachPath { isa in
            var y = [Float](repeating: .nan, count: n)
            want8.withUnsafeBytes { squeeze_dequantize_q8_0($0.baseAddress!.assumingMemoryBound(to: squeeze_block_q8_0.self), &y, n) }
            assertBitwise(y, deq8, "dequantize_q8_0 (\(isa)) vs gguf")
            want4.withUnsafeBytes { squeeze_dequantize_q4_0($0.baseAddress!.assumingMemoryBound(to: squeeze_block_q4_0.self), &y, n) }
            assertBitwise(y, deq4, "dequantize_q4_0 (\(isa)) vs gguf")
        }

        // The per-weight rule with the block's scale (GPTQ's path) gives the same codes.
        for b in 0..<n / 32 {
            let xb = Array(x[32 * b..<32 * b + 32])
            let d8 = squeeze_q8_0_scale(xb), d4 = squeeze_q4_0_scale(xb)
            XCTAssertEqual(squeeze_fp32_to_fp16(d8), UInt16(want8[34 * b]) | UInt16(want8[34 * b + 1]) << 8, "Q8_0 scale of block \(b)")
            XCTAssertEqual(squeeze_fp32_to_fp16(d4), UInt16(want4[18 * b]) | UInt16(want4[18 * b + 1]) << 8, "Q4_0 scale of block \(b)")
            let id8: Float = d8 != 0 ? 1 / d8 : 0, id4: Float = d4 != 0 ? 1 / d4 : 0
            for j in 0..<32 {
                XCTAssertEqual(Int8(truncatingIfNeeded: squeeze_q8_0_code(xb[j], id8)), Int8(bitPattern: want8[34 * b + 2 + j]),
                               "Q8_0 code \(j) of block \(b)")
                let byte = want4[18 * b + 2 + j % 16]
                XCTAssertEqual(squeeze_q4_0_code(xb[j], id4), Int32(j < 16 ? byte & 15 : byte >> 4), "Q4_0 code \(j) of block \(b)")
            }
        }
    }

    func testQuantCodesSaturateBeyondGGMLRange() {
        XCTAssertEqual(squeeze_q8_0_code(2.5, 1), 3)   // half away from zero
        XCTAssertEqual(squeeze_q8_0_code(-2.5, 1), -3)
        XCTAssertEqual(squeeze_q8_0_code(127.4, 1), 127)
        XCTAssertEqual(squeeze_q8_0_code(1000, 1), 127)
        XCTAssertEqual(squeeze_q8_0_code(-127.6, 1), -128)
        XCTAssertEqual(squeeze_q8_0_code(-1e30, 1), -128)
        XCTAssertEqual(squeeze_q8_0_code(.nan, 1), 0)
        XCTAssertEqual(squeeze_q4_0_code(-0.5, 1), 8)  // trunc(8.0)
        XCTAssertEqual(squeeze_q4_0_code(0.49, 1), 8)
        XCTAssertEqual(squeeze_q4_0_code(0.5, 1), 9)
        XCTAssertEqual(squeeze_q4_0_code(-8, 1), 0)
        XCTAssertEqual(squeeze_q4_0_code(7.5, 1), 15)  // 16 clamps to 15, as ggml's MIN(15, ...)
        XCTAssertEqual(squeeze_q4_0_code(100, 1), 15)
        XCTAssertEqual(squeeze_q4_0_code(-9.2, 1), 0)
        XCTAssertEqual(squeeze_q4_0_code(-1e30, 1), 0)
        XCTAssertEqual(squeeze_q4_0_code(.nan, 1), 8)
        var zeros = [Float](repeating: 0, count: 32)
        XCTAssertEqual(squeeze_q8_0_scale(zeros), 0)
        XCTAssertEqual(squeeze_q4_0_scale(zeros), 0)
        zeros[3] = -2; zeros[9] = 2
        XCTAssertEqual(squeeze_q4_0_scale(zeros), 0.25, "the first value of largest magnitude (-2) sets d = -2 / -8")
        XCTAssertEqual(squeeze_q8_0_scale(zeros), 2 / 127)
    }

    // MARK: - Bitmask sparse

    /// Mask words, packed values and row starts of a dense W, built here independently.
    func bitmaskForm(_ w: [Float], rows: Int, cols: Int) -> (mask: [UInt64], values: [Float], rowStart: [UInt64]) {
        let wpr = (cols + 63) / 64
        var mask = [UInt64](repeating: 0, count: rows * wpr), values = [Float](), rowStart = [UInt64]()
        for r in 0..<rows {
            rowStart.append(UInt64(values.count))
            for c in 0..<cols where w[r * cols + c] != 0 {
                mask[r * wpr + c / 64] |= 1 << UInt64(c % 64)
                values.append(w[r * cols + c])
            }
        }
        rowStart.append(UInt64(values.count))
        return (mask, values, rowStart)
    }

    func testBitmaskGemvAndDecodeRows() {
        forEachCase({ _ in true }) { k in
            let form = bitmaskForm(k.w, rows: k.rows, cols: k.cols)
            var starts = [UInt64](repeating: 99, count: k.rows + 1)
            squeeze_bitmask_row_starts(form.mask, k.rows, k.cols, &starts)
            XCTAssertEqual(starts, form.rowStart, "row starts \(k)")
            let valuesH = form.values.map { squeeze_fp32_to_bf16($0) }
            let wb = bf16Widened(k.w)
            forEachPath { isa in
                for (r0, r1) in ranges(k.rows) {
                    let what = "\(isa) \(k) rows \(r0)..<\(r1)"
                    var y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_bitmask_f32(form.mask, form.values, form.rowStart, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(k.w, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_bitmask_f32 \(what)")
                    y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_bitmask_bf16(form.mask, valuesH, form.rowStart, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(wb, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_bitmask_bf16 \(what)")

                    var dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_bitmask_f32(form.mask, form.values, form.rowStart, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(k.w[r0 * k.cols..<r1 * k.cols]), "decode_rows_bitmask_f32 \(what)")
                    dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_bitmask_bf16(form.mask, valuesH, form.rowStart, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(wb[r0 * k.cols..<r1 * k.cols]), "decode_rows_bitmask_bf16 \(what)")
                }
            }
        }
    }

    /// Pruned columns of x never enter the sum (x may hold inf there).
    func testBitmaskIgnoresPrunedActivations() {
        let cols = 70
        var w = [Float](repeating: 0, count: cols), x = [Float](repeating: .infinity, count: cols)
        for c in stride(from: 0, to: cols, by: 3) { w[c] = Float(c); x[c] = 0.5 }
        let form = bitmaskForm(w, rows: 1, cols: cols)
        let valuesH = form.values.map { squeeze_fp32_to_bf16($0) }
        let want = Float(stride(from: 0, to: cols, by: 3).reduce(0, +)) * 0.5
        forEachPath { isa in
            var y: [Float] = [.nan]
            squeeze_gemv_bitmask_f32(form.mask, form.values, form.rowStart, cols, 0, 1, x, &y)
            XCTAssertEqual(y[0], want, "f32 \(isa)")
            squeeze_gemv_bitmask_bf16(form.mask, valuesH, form.rowStart, cols, 0, 1, x, &y)
            XCTAssertEqual(y[0], want, "bf16 \(isa)")
        }
    }

    // MARK: - 2:4 sparse

    /// The case's W made 2:4: each group of 4 keeps its two largest magnitudes (fewer when it has
    /// fewer non-zeros).
    func twoFour(_ w: [Float]) -> [Float] {
        var out = [Float](repeating: 0, count: w.count)
        for g in stride(from: 0, to: w.count, by: 4) {
            let order = (0..<4).sorted { abs(w[g + $0]) > abs(w[g + $1]) || (abs(w[g + $0]) == abs(w[g + $1]) && $0 < $1) }
            for p in order.prefix(2) { out[g + p] = w[g + p] }
        }
        return out
    }

    /// The packed form, built here independently: kept non-zeros, then the lowest free positions.
    func nm24Form(_ w: [Float], rows: Int, cols: Int) -> (values: [Float], positions: [UInt8]) {
        let pb = (cols / 4 + 1) / 2
        var values = [Float](), positions = [UInt8](repeating: 0, count: rows * pb)
        for r in 0..<rows {
            for g in 0..<cols / 4 {
                var kept = (0..<4).filter { w[r * cols + 4 * g + $0] != 0 }
                for p in 0..<4 where kept.count < 2 && !kept.contains(p) { kept.append(p) }
                kept.sort()
                values += kept.map { w[r * cols + 4 * g + $0] }
                positions[r * pb + g / 2] |= UInt8(kept[0] | kept[1] << 2) << (4 * (g % 2))
            }
        }
        return (values, positions)
    }

    func testNM24PackGemvAndDecodeRows() {
        forEachCase({ $0 % 4 == 0 }) { k in
            let w24 = twoFour(k.w)
            let want = nm24Form(w24, rows: k.rows, cols: k.cols)
            var values = [Float](repeating: .nan, count: k.rows * k.cols / 2)
            var positions = [UInt8](repeating: 0xAA, count: k.rows * squeeze_nm24_position_bytes(k.cols))
            XCTAssertEqual(squeeze_nm24_pack_f32(w24, k.rows, k.cols, &values, &positions, nil, nil), 0)
            assertBitwise(values, want.values, "nm24 values \(k)")
            XCTAssertEqual(positions, want.positions, "nm24 positions \(k)")
            var valuesH = [UInt16](repeating: 0, count: values.count)
            squeeze_f32_to_bf16_n(values, &valuesH, values.count)
            let wb = bf16Widened(w24)
            forEachPath { isa in
                for (r0, r1) in ranges(k.rows) {
                    let what = "\(isa) \(k) rows \(r0)..<\(r1)"
                    var y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_nm24_f32(values, positions, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(w24, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_nm24_f32 \(what)")
                    y = [Float](repeating: .nan, count: r1 - r0)
                    squeeze_gemv_nm24_bf16(valuesH, positions, k.cols, r0, r1, k.x, &y)
                    assertGemv(y, reference(wb, cols: k.cols, r0, r1, k.x), cols: k.cols, "gemv_nm24_bf16 \(what)")

                    var dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_nm24_f32(values, positions, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(w24[r0 * k.cols..<r1 * k.cols]), "decode_rows_nm24_f32 \(what)")
                    dst = [Float](repeating: .nan, count: (r1 - r0) * k.cols)
                    squeeze_decode_rows_nm24_bf16(valuesH, positions, k.cols, r0, r1, &dst)
                    assertBitwise(dst, Array(wb[r0 * k.cols..<r1 * k.cols]), "decode_rows_nm24_bf16 \(what)")
                }
            }
        }
    }

    func testNM24PackRejectsThreeNonZerosInAGroup() {
        var w = [Float](repeating: 0, count: 3 * 12)
        w[12 + 4] = 1; w[12 + 6] = 2; w[12 + 7] = .nan   // row 1, group 1: three "non-zeros" (NaN counts)
        var values = [Float](repeating: 0, count: 3 * 6), positions = [UInt8](repeating: 0, count: 3 * 2)
        var badRow = 99, badGroup = 99
        XCTAssertEqual(squeeze_nm24_pack_f32(w, 3, 12, &values, &positions, &badRow, &badGroup), -1)
        XCTAssertEqual(badRow, 1)
        XCTAssertEqual(badGroup, 1)
        XCTAssertEqual(squeeze_nm24_pack_f32(w, 1, 12, &values, &positions, nil, nil), 0, "row 0 alone is 2:4")
    }

    // MARK: - Conversions

    func testFP16ExhaustiveRoundTrip() {
        for h in 0...UInt16.max {
            let f = squeeze_fp16_to_fp32(h)
            let swift = Float(Float16(bitPattern: h))
            if swift.isNaN {
                // Quiet NaN, sign and payload kept (as F16C's vcvtph2ps).
                let want = UInt32(h & 0x8000) << 16 | 0x7FC0_0000 | UInt32(h & 0x3FF) << 13
                XCTAssertEqual(f.bitPattern, want, "fp16 0x\(String(h, radix: 16)) -> fp32")
                XCTAssertEqual(squeeze_fp32_to_fp16(f), h | 0x0200, "NaN 0x\(String(h, radix: 16)) round trip (quiet)")
            } else {
                XCTAssertEqual(f.bitPattern, swift.bitPattern, "fp16 0x\(String(h, radix: 16)) -> fp32")
                XCTAssertEqual(squeeze_fp32_to_fp16(f), h, "fp16 0x\(String(h, radix: 16)) round trip")
            }
        }
    }

    func testFP32ToFP16EdgeCasesAndRandom() {
        let cases: [(Float, UInt16)] = [
            (0, 0x0000), (-0.0, 0x8000), (1, 0x3C00), (-2, 0xC000),
            (65504, 0x7BFF), (65519.996, 0x7BFF), (65520, 0x7C00), (1e10, 0x7C00), (-1e10, 0xFC00),
            (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (1 + 0x1p-11, 0x3C00),          // tie -> even (1.0)
            (1 + 3 * 0x1p-11, 0x3C02),      // tie -> even (1 + 2^-9)
            (1 + 0x1p-11 + 0x1p-23, 0x3C01),
            (0x1p-14, 0x0400),              // smallest normal
            (0x1p-24, 0x0001),              // smallest subnormal
            (0x1p-25, 0x0000),              // tie between 0 and 2^-24 -> even (0)
            (0x1p-25 + 0x1p-48, 0x0001),
            (3 * 0x1p-25, 0x0002),          // tie between 1 and 2 units -> even (2)
            (-5 * 0x1p-25, 0x8002),         // tie between 2 and 3 units -> even (2)
            (0x1p-14 - 0x1p-25, 0x0400),    // largest subnormal + half a unit: tie -> even (rounds up to the normal)
            (1e-8, 0x0000), (-1e-8, 0x8000), (.leastNonzeroMagnitude, 0),
            (.nan, 0x7E00), (-Float.nan, 0xFE00),
            (Float(bitPattern: 0x7F80_0001), 0x7E00),   // signalling -> quiet
            (Float(bitPattern: 0x7FA0_0000), 0x7F00),   // payload's top bits kept
        ]
        for (x, want) in cases {
            XCTAssertEqual(squeeze_fp32_to_fp16(x), want, "fp32 \(x) (0x\(String(x.bitPattern, radix: 16))) -> fp16")
            if !x.isNaN { XCTAssertEqual(Float16(x).bitPattern, want, "the expectation agrees with Swift's Float16 for \(x)") }
        }
        // Random bit patterns over the whole exponent range, against Swift's Float16 conversion.
        var g = SplitMix64(7)
        for _ in 0..<200_000 {
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: g.next()))
            if x.isNaN { continue }
            XCTAssertEqual(squeeze_fp32_to_fp16(x), Float16(x).bitPattern, "fp32 0x\(String(x.bitPattern, radix: 16))")
        }
        // The range where fp16 is finite, densely.
        for _ in 0..<200_000 {
            let x = Float(g.uniform() * 131_072 - 65_536) * Float(pow(2.0, -Double(g.next() % 40)))
            XCTAssertEqual(squeeze_fp32_to_fp16(x), Float16(x).bitPattern, "fp32 \(x)")
        }
    }

    /// BF16 by an independent rule: of the two BF16 values around x (truncation, and one unit in
    /// the last place up in magnitude, 2^128 = inf past the largest finite), the nearer in Double;
    /// a tie goes to the even one. NaN -> 0x7FC0.
    func referenceBF16(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let lo = UInt16(x.bitPattern >> 16)
        if x.bitPattern & 0xFFFF == 0 || x.isInfinite { return lo }
        let e = Int(lo >> 7 & 0xFF)
        let ulp = pow(2.0, Double(max(e, 1) - 127 - 7))
        let a = abs(Double(x)), vl = abs(Double(Float(bitPattern: UInt32(lo) << 16))), vh = vl + ulp
        let dl = a - vl, dh = vh - a
        if dl < dh { return lo }
        if dh < dl { return lo &+ 1 }
        return lo & 1 == 0 ? lo : lo &+ 1
    }

    func testFP32ToBF16EdgeCasesAndRandom() {
        let cases: [(UInt32, UInt16)] = [
            (0x3F80_0000, 0x3F80), (0x3F80_8000, 0x3F80), (0x3F81_8000, 0x3F82), (0x3F80_8001, 0x3F81),
            (0x3F80_7FFF, 0x3F80), (0xBF81_8000, 0xBF82),
            (0x7F7F_FFFF, 0x7F80), (0x7F7F_7FFF, 0x7F7F), (0x7F7F_8000, 0x7F80),   // overflow to inf
            (0x0000_8000, 0x0000), (0x0001_8000, 0x0002), (0x0000_8001, 0x0001),   // subnormal ties
            (0x0000_0001, 0x0000), (0x8000_0000, 0x8000), (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),
            (0x7FC0_0000, 0x7FC0), (0xFFC0_0000, 0x7FC0), (0x7F80_0001, 0x7FC0), (0x7FFF_FFFF, 0x7FC0),
        ]
        for (bits, want) in cases {
            let x = Float(bitPattern: bits)
            XCTAssertEqual(squeeze_fp32_to_bf16(x), want, "fp32 0x\(String(bits, radix: 16)) -> bf16")
            XCTAssertEqual(referenceBF16(x), want, "the independent rule agrees for 0x\(String(bits, radix: 16))")
        }
        var g = SplitMix64(11)
        for _ in 0..<300_000 {
            let x = Float(bitPattern: UInt32(truncatingIfNeeded: g.next()))
            XCTAssertEqual(squeeze_fp32_to_bf16(x), referenceBF16(x), "fp32 0x\(String(x.bitPattern, radix: 16))")
        }
        for h in stride(from: 0, through: Int(UInt16.max), by: 1) {
            let b = UInt16(h), f = squeeze_bf16_to_fp32(b)
            XCTAssertEqual(f.bitPattern, UInt32(b) << 16)
            if !f.isNaN { XCTAssertEqual(squeeze_fp32_to_bf16(f), b, "bf16 round trip 0x\(String(b, radix: 16))") }
        }
    }

    /// The array conversions give the scalar functions' bits at every level, for every tail length.
    func testArrayConversionsMatchScalar() {
        var g = SplitMix64(3)
        let special: [Float] = [.nan, -.nan, .infinity, -.infinity, 0, -0.0, Float(bitPattern: 0x0000_8000), Float(bitPattern: 0x3F80_8000),
                                Float(bitPattern: 0x7F7F_FFFF), Float(bitPattern: 0x7F80_0001)]
        let x = special + (0..<200).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: g.next())) }
        let h = x.map { squeeze_fp32_to_bf16($0) }
        forEachPath { isa in
            for n in [0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 64, x.count] {
                var y = [UInt16](repeating: 0xDEAD, count: n + 1)
                squeeze_f32_to_bf16_n(x, &y, n)
                XCTAssertEqual(Array(y[0..<n]), Array(h[0..<n]), "f32_to_bf16_n \(isa) n=\(n)")
                XCTAssertEqual(y[n], 0xDEAD, "f32_to_bf16_n \(isa) n=\(n) writes nothing past n")
                var f = [Float](repeating: 7, count: n + 1)
                squeeze_bf16_to_f32_n(h, &f, n)
                XCTAssertEqual(f[0..<n].map(\.bitPattern), h[0..<n].map { UInt32($0) << 16 }, "bf16_to_f32_n \(isa) n=\(n)")
                XCTAssertEqual(f[n], 7, "bf16_to_f32_n \(isa) n=\(n) writes nothing past n")
            }
            // F16 -> F32: every one of the 65,536 halves (and short tails) as the scalar rule.
            let all = (0...UInt16.max).map { $0 }
            for n in [0, 1, 7, 8, 9, 17, all.count] {
                var f = [Float](repeating: 7, count: n + 1)
                squeeze_f16_to_f32_n(all, &f, n)
                XCTAssertEqual(f[0..<n].map(\.bitPattern), all[0..<n].map { squeeze_fp16_to_fp32($0).bitPattern }, "f16_to_f32_n \(isa) n=\(n)")
                XCTAssertEqual(f[n], 7, "f16_to_f32_n \(isa) n=\(n) writes nothing past n")
            }
        }
    }

    // MARK: - Attention over a BF16 cache

    /// squeeze_attend_bf16 against a Double softmax-weighted sum of the BF16 rows: head sizes
    /// below, at and between vector widths, 0, 1 and many positions, rows strided as in a cache.
    func testAttendBF16MatchesDoubleReference() {
        var rng = SplitMix64(23)
        forEachPath { isa in
            for hs in [1, 7, 16, 19, 64, 80] {
                for n in [0, 1, 2, 37, 130] {
                    let stride = 3 * hs + 5
                    let q = (0..<hs).map { _ in 2 * rng.normal() }
                    let k = (0..<(max(n, 1) * stride)).map { _ in squeeze_fp32_to_bf16(rng.normal()) }
                    let v = (0..<(max(n, 1) * stride)).map { _ in squeeze_fp32_to_bf16(rng.normal()) }
                    let scale = 1 / Float(hs).squareRoot()
                    var scores = [Float](repeating: 0, count: max(n, 1)), out = [Float](repeating: .nan, count: hs)
                    squeeze_attend_bf16(q, k, v, stride, n, hs, scale, &scores, &out)
                    // Reference: scores, softmax and the weighted sum in Double.
                    let s = (0..<n).map { j in Double(scale) * (0..<hs).reduce(0.0) { $0 + Double(q[$1]) * Double(squeeze_bf16_to_fp32(k[j * stride + $1])) } }
                    let mx = s.max() ?? 0, e = s.map { exp($0 - mx) }, total = e.reduce(0, +)
                    for d in 0..<hs {
                        let want = n == 0 ? 0 : (0..<n).reduce(0.0) { $0 + e[$1] * Double(squeeze_bf16_to_fp32(v[$1 * stride + d])) } / total
                        XCTAssertEqual(Double(out[d]), want, accuracy: 1e-5 * (1 + abs(want)), "\(isa) hs=\(hs) n=\(n) d=\(d)")
                    }
                }
            }
        }
    }

    // MARK: - Dispatch and the probe

    func testISALevelsAndKnobs() {
        XCTAssertEqual(String(cString: squeeze_isa_name(0)), "generic")
        XCTAssertEqual(String(cString: squeeze_isa_name(1)), "avx2")
        XCTAssertEqual(String(cString: squeeze_isa_name(2)), "avx512")
        XCTAssertEqual(String(cString: squeeze_isa_name(7)), "unknown")
        squeeze_set_isa(-1)
        let top = squeeze_isa()
        XCTAssertTrue((0...2).contains(top))
        if let env = ProcessInfo.processInfo.environment["SQUEEZE_ISA"] {
            let cap: Int32? = ["generic": 0, "avx2": 1, "avx512": 2][env]
            if let cap { XCTAssertLessThanOrEqual(top, cap, "SQUEEZE_ISA=\(env) caps the level") }
        }
        #if arch(x86_64)
        #else
        XCTAssertEqual(top, 0, "non-x86 builds have only the scalar paths")
        #endif
        squeeze_set_isa(2)
        XCTAssertEqual(squeeze_isa(), top, "set_isa never raises the level above the detected/env one")
        squeeze_set_isa(0)
        XCTAssertEqual(squeeze_isa(), 0)
        squeeze_set_isa(-1)
        XCTAssertEqual(squeeze_isa(), top)
        if top == 2 {
            print("PackedKernelTests: ISA avx512, bf16 \(squeeze_cpu_has_avx512_bf16()), vnni \(squeeze_cpu_has_avx512_vnni()), vbmi2 \(squeeze_cpu_has_avx512_vbmi2())")
        } else {
            print("PackedKernelTests: ISA \(String(cString: squeeze_isa_name(top)))")
        }
    }

    func testBandwidthProbeSums() {
        forEachPath { isa in
            for n in [0, 1, 15, 16, 17, 63, 64, 65, 1000] {
                let p = (0..<n).map { Float($0 % 7) - 3 }
                let want = p.reduce(0.0) { $0 + Double($1) }
                XCTAssertEqual(squeeze_read_bandwidth_probe(p, n), want, "probe \(isa) n=\(n)")
            }
        }
    }
}
