// Vectorisable kernels for the softmaxes over the 50257-way vocabulary, GELU's tanh and the
// reductions in LayerNorm. Swift has no fast-math, so a float reduction written as one
// accumulator stays scalar; these loops use independent accumulators or pure maps, which LLVM
// vectorizes (about 0.5 ns per exp on one core against 3 ns for libm's expf).

/// exp(x) Cephes-style: 2^n · p(r), n = round(x / ln 2), r = x − n ln 2 (two-part ln 2), p a
/// degree-6 polynomial; max relative error about 1.2e-7 over [-87, 88]. NaN gives NaN (no
/// float-to-int conversion that could trap): n is rounded and read off by adding 1.5·2^23.
@inline(__always)
public func fastExp(_ xIn: Float) -> Float {
    var x = xIn < -87.3 ? -87.3 : xIn
    x = x > 88.7 ? 88.7 : x
    let shifted = x * 1.44269504088896341 + 12582912.0   // 1.5·2^23: rounds to the nearest even integer
    let fx = shifted - 12582912.0
    let n = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
    x = x - fx * 0.693359375
    x = x + fx * 2.12194440e-4
    let z = x * x
    var y: Float = 1.9875691500e-4
    y = y * x + 1.3981999507e-3
    y = y * x + 8.3334519073e-3
    y = y * x + 4.1665795894e-2
    y = y * x + 1.6666665459e-1
    y = y * x + 5.0000001201e-1
    y = y * z + x + 1
    return y * Float(bitPattern: UInt32(bitPattern: n &+ 127) &<< 23)
}

/// `fastExp` on eight lanes at once, the same operations in the same order (so the same bits as
/// the scalar form). Written with SIMD types because LLVM keeps a loop scalar when it cannot prove
/// the input and output apart, as in the inference forward's in-place GELU.
@inline(__always)
public func fastExp(_ xIn: SIMD8<Float>) -> SIMD8<Float> {
    var x = xIn.replacing(with: -87.3, where: xIn .< -87.3)
    x = x.replacing(with: 88.7, where: x .> 88.7)
    let shifted = x * 1.44269504088896341 + 12582912.0
    let fx = shifted - 12582912.0
    let n = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000
    x = x - fx * 0.693359375
    x = x + fx * 2.12194440e-4
    let z = x * x
    var y = SIMD8<Float>(repeating: 1.9875691500e-4)
    y = y * x + 1.3981999507e-3
    y = y * x + 8.3334519073e-3
    y = y * x + 4.1665795894e-2
    y = y * x + 1.6666665459e-1
    y = y * x + 5.0000001201e-1
    y = y * z + x + 1
    return y * unsafeBitCast((n &+ 127) &<< 23, to: SIMD8<Float>.self)
}

/// `fastTanh` on eight lanes at once (the same operations, so the same bits).
@inline(__always)
public func fastTanh(_ u: SIMD8<Float>) -> SIMD8<Float> { 1 - 2 / (fastExp(2 * u) + 1) }

/// Applies `f` to `count` floats from `inp` into `out` eight at a time (then the tail one by one
/// through the same function); `out` may be `inp` (an in-place map).
@inline(__always)
public func simdMap(out: UnsafeMutablePointer<Float>, inp: UnsafePointer<Float>, range r: Range<Int>,
                    _ f: (SIMD8<Float>) -> SIMD8<Float>) {
    simdMap(out: out, inp, inp, range: r) { x, _ in f(x) }
}

/// out[i] = f(a[i], b[i]) eight at a time (then the tail one by one through the same function);
/// `out` may be `a` or `b`.
@inline(__always)
public func simdMap(out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                    range r: Range<Int>, _ f: (SIMD8<Float>, SIMD8<Float>) -> SIMD8<Float>) {
    var i = r.lowerBound
    while i + 8 <= r.upperBound {
        let x = UnsafeRawPointer(a + i).loadUnaligned(as: SIMD8<Float>.self)
        let y = UnsafeRawPointer(b + i).loadUnaligned(as: SIMD8<Float>.self)
        UnsafeMutableRawPointer(out + i).storeBytes(of: f(x, y), as: SIMD8<Float>.self)
        i += 8
    }
    while i < r.upperBound {
        out[i] = f(SIMD8<Float>(repeating: a[i]), SIMD8<Float>(repeating: b[i]))[0]
        i += 1
    }
}

/// tanh(u) = 1 − 2 / (exp(2u) + 1), exact at the extremes (±1).
@inline(__always)
public func fastTanh(_ u: Float) -> Float { 1 - 2 / (fastExp(2 * u) + 1) }

/// Σ x[0..<n] with eight independent accumulators, finished in Double.
@inline(__always)
public func sum8(_ x: UnsafePointer<Float>, count n: Int) -> Double {
    var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0, a4: Float = 0, a5: Float = 0, a6: Float = 0, a7: Float = 0
    var j = 0
    while j + 8 <= n {
        a0 += x[j]; a1 += x[j + 1]; a2 += x[j + 2]; a3 += x[j + 3]
        a4 += x[j + 4]; a5 += x[j + 5]; a6 += x[j + 6]; a7 += x[j + 7]
        j += 8
    }
    var t = (Double(a0) + Double(a1)) + (Double(a2) + Double(a3)) + (Double(a4) + Double(a5)) + (Double(a6) + Double(a7))
    while j < n { t += Double(x[j]); j += 1 }
    return t
}

/// Σ x[i] y[i] with eight independent accumulators.
@inline(__always)
public func dot8(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count n: Int) -> Double {
    var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0, a4: Float = 0, a5: Float = 0, a6: Float = 0, a7: Float = 0
    var j = 0
    while j + 8 <= n {
        a0 += x[j] * y[j]; a1 += x[j + 1] * y[j + 1]; a2 += x[j + 2] * y[j + 2]; a3 += x[j + 3] * y[j + 3]
        a4 += x[j + 4] * y[j + 4]; a5 += x[j + 5] * y[j + 5]; a6 += x[j + 6] * y[j + 6]; a7 += x[j + 7] * y[j + 7]
        j += 8
    }
    var t = (Double(a0) + Double(a1)) + (Double(a2) + Double(a3)) + (Double(a4) + Double(a5)) + (Double(a6) + Double(a7))
    while j < n { t += Double(x[j] * y[j]); j += 1 }
    return t
}

/// Σ (x[i] − mean)² with eight independent accumulators (two-pass variance).
@inline(__always)
public func squaredDeviation8(_ x: UnsafePointer<Float>, mean m: Float, count n: Int) -> Double {
    var a0: Float = 0, a1: Float = 0, a2: Float = 0, a3: Float = 0, a4: Float = 0, a5: Float = 0, a6: Float = 0, a7: Float = 0
    var j = 0
    while j + 8 <= n {
        let d0 = x[j] - m, d1 = x[j + 1] - m, d2 = x[j + 2] - m, d3 = x[j + 3] - m
        let d4 = x[j + 4] - m, d5 = x[j + 5] - m, d6 = x[j + 6] - m, d7 = x[j + 7] - m
        a0 += d0 * d0; a1 += d1 * d1; a2 += d2 * d2; a3 += d3 * d3
        a4 += d4 * d4; a5 += d5 * d5; a6 += d6 * d6; a7 += d7 * d7
        j += 8
    }
    var t = (Double(a0) + Double(a1)) + (Double(a2) + Double(a3)) + (Double(a4) + Double(a5)) + (Double(a6) + Double(a7))
    while j < n { let d = x[j] - m; t += Double(d * d); j += 1 }
    return t
}

/// Maximum of x[0..<n] (n ≥ 1).
@inline(__always)
public func maxValue(_ x: UnsafePointer<Float>, count n: Int) -> Float {
    var m0 = -Float.infinity, m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0, m6 = m0, m7 = m0
    var j = 0
    while j + 8 <= n {
        m0 = x[j] > m0 ? x[j] : m0; m1 = x[j + 1] > m1 ? x[j + 1] : m1
        m2 = x[j + 2] > m2 ? x[j + 2] : m2; m3 = x[j + 3] > m3 ? x[j + 3] : m3
        m4 = x[j + 4] > m4 ? x[j + 4] : m4; m5 = x[j + 5] > m5 ? x[j + 5] : m5
        m6 = x[j + 6] > m6 ? x[j + 6] : m6; m7 = x[j + 7] > m7 ? x[j + 7] : m7
        j += 8
    }
    var m = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    while j < n { m = max(m, x[j]); j += 1 }
    return m
}

/// out[i] = exp((x[i] − shift) · scale); returns Σ out[i]. `out` may alias `x`.
@inline(__always)
public func expShifted(_ x: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count n: Int, shift: Float, scale: Float = 1) -> Double {
    for j in 0..<n { out[j] = fastExp((x[j] - shift) * scale) }
    return sum8(out, count: n)
}

/// Σ exp((x[i] − shift) · scale) without keeping the terms (blocks through a stack buffer).
@inline(__always)
public func sumExpShifted(_ x: UnsafePointer<Float>, count n: Int, shift: Float, scale: Float = 1) -> Double {
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2048) { buf in
        var total = 0.0
        var i = 0
        while i < n {
            let m = min(2048, n - i)
            total += expShifted(x + i, buf.baseAddress!, count: m, shift: shift, scale: scale)
            i += m
        }
        return total
    }
}

/// Scales x[0..<n] in place.
@inline(__always)
public func scale(_ x: UnsafeMutablePointer<Float>, count n: Int, by k: Float) {
    for j in 0..<n { x[j] *= k }
}
