import CKernels
import Dispatch
import Foundation
import Kernels
import TestSupport
import XCTest

/// BF16Matmul (Sources/Kernels/BF16Matmul.swift): oneDNN's BF16 path where this machine has one,
/// and the fallback (widened weights + sgemm) everywhere, against a Float64 reference computed
/// from the BF16-rounded operands.
///
/// Tolerance: both paths multiply BF16 values, whose products are exact in F32 (8-bit
/// significands), and add the k products and beta·C in F32 in some order. Any order of n - 1 F32
/// additions errs by at most γ(n-1)·Σ|terms| with γ(j) = j·u/(1 - j·u), u = 2⁻²⁴ (Higham, Thm 4.2
/// and its proof for any summation order), so each element is checked to
/// (k + 2)·2⁻²⁴·(Σ_l |a_il b_lj| + |beta·c_ij|). A wrong index, transposition or leading dimension
/// breaks this by orders of magnitude; unrounded activations break it at small k (and always in
/// `testIntegerProductsAreExact`, where every path must be bit exact).
final class BF16MatmulTests: XCTestCase {
    static let nanBF16: UInt16 = 0x7FC0
    /// What C's padding holds; it must come back untouched.
    static let sentinel: Float = 12345

    /// One product's operands, laid out with leading dimensions, and its reference.
    struct Case: CustomStringConvertible {
        let m: Int, n: Int, k: Int, lda: Int, ldb: Int, ldc: Int
        let transB: Bool, beta: Float
        var a: [Float], b: [UInt16], c0: [Float]
        var expected: [Double] = [], bound: [Double] = []
        var description: String {
            "m=\(m) n=\(n) k=\(k) lda=\(lda) ldb=\(ldb) ldc=\(ldc) transB=\(transB) beta=\(beta)"
        }

        /// Random normal operands; the padding of A and B is NaN (a kernel reading it poisons C).
        init(m: Int, n: Int, k: Int, transB: Bool, beta: Float, padded: Bool, seed: UInt64) {
            (self.m, self.n, self.k, self.transB, self.beta) = (m, n, k, transB, beta)
            lda = k + (padded ? 3 : 0)
            ldb = (transB ? k : n) + (padded ? 5 : 0)
            ldc = n + (padded ? 7 : 0)
            var rng = SplitMix64(seed)
            a = [Float](repeating: .nan, count: m * lda)
            for i in 0..<m { for l in 0..<k { a[i * lda + l] = rng.normal() } }
            let bRows = transB ? n : k, bCols = transB ? k : n
            b = [UInt16](repeating: BF16MatmulTests.nanBF16, count: bRows * ldb)
            for r in 0..<bRows { for j in 0..<bCols { b[r * ldb + j] = squeeze_fp32_to_bf16(rng.normal()) } }
            // beta = 0 must overwrite C, NaN included.
            c0 = [Float](repeating: BF16MatmulTests.sentinel, count: m * ldc)
            for i in 0..<m { for j in 0..<n { c0[i * ldc + j] = beta == 0 ? .nan : rng.normal() } }
            computeReference()
        }

        func bValue(_ l: Int, _ j: Int) -> Double {
            Double(squeeze_bf16_to_fp32(transB ? b[j * ldb + l] : b[l * ldb + j]))
        }

        /// expected = round(A)·op(B) + beta·C0 in Float64; bound = (k + 2)·2⁻²⁴·Σ|terms|.
        mutating func computeReference() {
            expected = [Double](repeating: 0, count: m * n)
            bound = expected
            let ra = a.map { Double(squeeze_bf16_to_fp32(squeeze_fp32_to_bf16($0))) }
            var bt = [Double](repeating: 0, count: n * k)  // op(B) as [n, k] rows
            for j in 0..<n { for l in 0..<k { bt[j * k + l] = bValue(l, j) } }
            let gamma = Double(k + 2) * 0x1p-24
            for i in 0..<m {
                for j in 0..<n {
                    var s = 0.0, abs = 0.0
                    for l in 0..<k {
                        let p = ra[i * lda + l] * bt[j * k + l]
                        s += p
                        abs += Swift.abs(p)
                    }
                    if beta != 0 {
                        let t = Double(beta) * Double(c0[i * ldc + j])
                        s += t
                        abs += Swift.abs(t)
                    }
                    expected[i * n + j] = s
                    bound[i * n + j] = gamma * abs
                }
            }
        }

        /// C from BF16Matmul.gemm on the current path.
        func run(threads: Int? = nil) -> [Float] {
            var c = c0
            a.withUnsafeBufferPointer { pa in
                b.withUnsafeBufferPointer { pb in
                    c.withUnsafeMutableBufferPointer { pc in
                        BF16Matmul.gemm(m: m, n: n, k: k, a: pa.baseAddress!, lda: lda, b: pb.baseAddress!, ldb: ldb,
                                        transB: transB, c: pc.baseAddress!, ldc: ldc, beta: beta, threads: threads)
                    }
                }
            }
            return c
        }

        /// Number of elements outside the bound (or padding changed); reports the first few.
        @discardableResult
        func check(_ c: [Float], _ label: String, file: StaticString = #filePath, line: UInt = #line) -> Int {
            var bad = 0
            for i in 0..<m {
                for j in 0..<n {
                    let got = Double(c[i * ldc + j]), want = expected[i * n + j]
                    if !(Swift.abs(got - want) <= bound[i * n + j]) {
                        if bad < 3 {
                            XCTFail("\(label) \(self): C[\(i),\(j)] = \(got), expected \(want) ± \(bound[i * n + j])", file: file, line: line)
                        }
                        bad += 1
                    }
                }
                for j in n..<ldc where c[i * ldc + j] != BF16MatmulTests.sentinel {
                    XCTFail("\(label) \(self): padding C[\(i),\(j)] changed", file: file, line: line)
                    bad += 1
                }
            }
            return bad
        }
    }

    override func tearDown() {
        BF16Matmul.forceFallback = false
        squeeze_set_isa(-1)
        super.tearDown()
    }

    /// The paths this machine has: oneDNN's (if available) and the forced fallback.
    func forEachPath(_ body: (String) -> Void) {
        if BF16Matmul.isAvailable { body("oneDNN") }
        BF16Matmul.forceFallback = true
        defer { BF16Matmul.forceFallback = false }
        XCTAssertFalse(BF16Matmul.isAvailable)
        body("fallback")
    }

    // MARK: - Dispatch

    func testAvailabilityFollowsTheCPUAndTheISACap() {
        let cpu = squeeze_cpu_has_avx512_bf16() != 0 && squeeze_isa() >= Int32(SQUEEZE_ISA_AVX512)
        XCTAssertEqual(BF16Matmul.isAvailable, cpu, "AVX-512 BF16 CPU (and ISA cap) \(cpu)")
        let impl = BF16Matmul.implementation(m: 1024, n: 2304, k: 768, transB: true)
        if cpu {
            let name = try? XCTUnwrap(impl, "oneDNN gave a reference (or no) implementation")
            XCTAssertFalse(name?.hasPrefix("ref") ?? true)
            print("BF16Matmul: oneDNN implementation for 1024x2304x768 transB: \(name ?? "none")")
        } else {
            XCTAssertNil(impl)
        }
        squeeze_set_isa(Int32(SQUEEZE_ISA_AVX2))
        XCTAssertFalse(BF16Matmul.isAvailable, "SQUEEZE_ISA below avx512 must disable oneDNN")
        XCTAssertNil(BF16Matmul.implementation(m: 1024, n: 2304, k: 768, transB: true))
        // ... and gemm stays correct under the cap.
        let c = Case(m: 17, n: 77, k: 45, transB: true, beta: 1, padded: true, seed: 7)
        c.check(c.run(), "isa cap avx2")
    }

    // MARK: - Accuracy

    func testOddShapesBothLayoutsBothBetas() {
        var seed: UInt64 = 1
        forEachPath { path in
            for m in [1, 3, 17, 64, 129] {
                for (n, k) in [(77, 45), (45, 77)] {
                    for transB in [true, false] {
                        for beta: Float in [0, 1] {
                            for padded in [false, true] {
                                seed += 1
                                let c = Case(m: m, n: n, k: k, transB: transB, beta: beta, padded: padded, seed: seed)
                                c.check(c.run(), path)
                            }
                        }
                    }
                }
            }
        }
    }

    /// gpt2-sized: 768 x 2304 (c_attn's and mlp's widths), both layouts, both betas, padded; on
    /// 1, 2 and 3 threads (one block; row blocks for m >= 128, 64-column blocks below).
    func testLargeShapes() {
        var cases: [Case] = []
        for (i, (m, transB, beta)) in [(1, true, Float(0)), (17, false, 1), (129, true, 1), (64, false, 0)].enumerated() {
            cases.append(Case(m: m, n: 768, k: 2304, transB: transB, beta: beta, padded: i % 2 == 0, seed: 100 + UInt64(i)))
        }
        cases.append(Case(m: 129, n: 2304, k: 768, transB: true, beta: 0, padded: true, seed: 200))
        forEachPath { path in
            for c in cases { for t in 1...3 { c.check(c.run(threads: t), "\(path), \(t) thread(s)") } }
        }
    }

    /// Integer data whose activations carry a fraction BF16 drops (3 + 2⁻¹⁰ -> 3): every product
    /// and sum is an integer below 2²⁴, so both paths must match the rounded reference EXACTLY
    /// (and differ from the unrounded product: activations must be rounded to BF16 first).
    func testIntegerProductsAreExact() {
        let (m, n, k) = (33, 70, 2304)
        var rng = SplitMix64(99)
        // Integers in ±1 ... ±4 (BF16's spacing there is 2⁻⁷ or more, so + 2⁻¹⁰ rounds away).
        let ai = (0..<(m * k)).map { _ in Float(Int(rng.next() % 4) + 1) * (rng.next() % 2 == 0 ? 1 : -1) }
        let a = ai.map { $0 + 0x1p-10 }
        XCTAssertTrue(zip(a, ai).allSatisfy { squeeze_bf16_to_fp32(squeeze_fp32_to_bf16($0)) == $1 })
        let bf = (0..<(n * k)).map { _ in Float(Int(rng.next() % 17) - 8) }  // [n, k]
        let b = bf.map { squeeze_fp32_to_bf16($0) }
        let c0 = (0..<(m * n)).map { _ in Float(Int(rng.next() % 100)) }
        var expected = c0
        for i in 0..<m { for j in 0..<n { for l in 0..<k { expected[i * n + j] += ai[i * k + l] * bf[j * k + l] } } }
        forEachPath { path in
            var c = c0
            BF16Matmul.gemm(m: m, n: n, k: k, a: a, b: b, transB: true, c: &c, beta: 1)
            XCTAssertEqual(zip(c, expected).filter { $0 != $1 }.count, 0, "\(path): integer products must be exact")
            var unrounded = c0
            for i in 0..<m { for j in 0..<n { for l in 0..<k { unrounded[i * n + j] += a[i * k + l] * bf[j * k + l] } } }
            XCTAssertGreaterThan(zip(c, unrounded).filter { $0 != $1 }.count, m * n / 2,
                                 "\(path): the test must tell rounded from unrounded activations")
        }
    }

    func testPathsAgree() throws {
        try XCTSkipUnless(BF16Matmul.isAvailable, "no oneDNN BF16 path on this machine")
        let c = Case(m: 64, n: 768, k: 768, transB: true, beta: 1, padded: true, seed: 300)
        let native = c.run()
        BF16Matmul.forceFallback = true
        let fallback = c.run()
        BF16Matmul.forceFallback = false
        for i in 0..<c.m {
            for j in 0..<c.n {
                let (x, y) = (Double(native[i * c.ldc + j]), Double(fallback[i * c.ldc + j]))
                XCTAssertLessThanOrEqual(abs(x - y), 2 * c.bound[i * c.n + j], "C[\(i),\(j)]")
            }
        }
    }

    func testEmptyAndZeroDepth() {
        var c: [Float] = [1, 2, 3, 4, 5, 6]
        let a: [Float] = [], b: [UInt16] = []
        BF16Matmul.gemm(m: 2, n: 3, k: 0, a: a, lda: 1, b: b, ldb: 1, transB: true, c: &c, beta: 1)
        XCTAssertEqual(c, [1, 2, 3, 4, 5, 6])
        BF16Matmul.gemm(m: 2, n: 3, k: 0, a: a, lda: 1, b: b, ldb: 1, transB: true, c: &c, beta: 0)
        XCTAssertEqual(c, [0, 0, 0, 0, 0, 0])
        BF16Matmul.gemm(m: 0, n: 3, k: 4, a: a, lda: 4, b: [UInt16](repeating: 0, count: 12), transB: true, c: &c)
        XCTAssertEqual(c, [0, 0, 0, 0, 0, 0])
    }

    // MARK: - Threads and the primitive cache

    /// Several threads at once (each with its own context and scratchpad), on shared primitives.
    func testConcurrentCallsShareThePrimitiveCache() {
        let cases = (0..<4).map { Case(m: 64, n: 77, k: 45 + 16 * ($0 % 2), transB: $0 % 2 == 0, beta: 1, padded: true, seed: 400 + UInt64($0)) }
        forEachPath { path in
            for c in cases { c.check(c.run(threads: 1), path + " (warm-up)") }
            let bad = UnsafeMutableBufferPointer<Int>.allocate(capacity: 8)
            defer { bad.deallocate() }
            DispatchQueue.concurrentPerform(iterations: 8) { t in
                var errors = 0
                for _ in 0..<5 {
                    let c = cases[t % cases.count]
                    errors += c.check(c.run(threads: 1), path + " thread \(t)")
                }
                bad[t] = errors
            }
            XCTAssertEqual(bad.reduce(0, +), 0)
        }
    }

    func testRepeatedShapeCreatesNoPrimitive() throws {
        try XCTSkipUnless(BF16Matmul.isAvailable, "no oneDNN BF16 path on this machine")
        let c = Case(m: 3, n: 77, k: 45, transB: false, beta: 0, padded: false, seed: 500)
        c.check(c.run(), "first")
        let before = BF16Matmul.cachedPrimitives
        for _ in 0..<3 { c.check(c.run(), "again") }
        XCTAssertEqual(BF16Matmul.cachedPrimitives, before)
    }
}
