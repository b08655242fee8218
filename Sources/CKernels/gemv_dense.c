// Dense GEMV: F32, BF16 and F16 weights W [rows, cols] (ggml layout, rows = outputs), the F32
// [in, out] (HF) variant, their decode_rows, and the read-bandwidth probe.
//
//   y[r - r0] = sum_c W[r, c] * x[c]     for r in [r0, r1)      W [rows, cols], x [cols]
//
// The vector paths take 4 rows at a time (one x load feeds 4 FMAs; 8 independent accumulators)
// and 1 row at a time for the last r1 - r0 mod 4 rows. The 4 rows are a quarter of the range
// apart (r0 + i, r0 + q + i, ...; q = (r1 - r0) / 4), so the weights stream as 4 sequential
// streams in different pages: 4 adjacent rows of a narrow matrix (a few KB apart) measured up
// to 2x slower from DRAM on Zen 5 (the hardware prefetchers lose track), 4 far-apart streams
// at or above the single-stream read bandwidth. Columns past the last full vector are
// masked loads (AVX-512) or a short scalar tail (AVX2); nothing is read past row ends.
// BF16 is widened in registers (u16 -> u32 << 16 is the exact F32) and multiplied in F32; F16
// (GGUF's F16 files) is widened by F16C's vcvtph2ps (exact) and multiplied in F32.
#include "internal.h"

#define SQ_INLINE static inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Scalar
// ---------------------------------------------------------------------------------------------

/// dot(w [cols], x [cols]) with 4 partial sums (so the loop is not one long dependency chain).
static float dot_f32_scalar(const float *w, const float *x, size_t cols) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t c = 0;
    for (; c + 4 <= cols; c += 4) {
        s0 += w[c] * x[c];
        s1 += w[c + 1] * x[c + 1];
        s2 += w[c + 2] * x[c + 2];
        s3 += w[c + 3] * x[c + 3];
    }
    for (; c < cols; c++) s0 += w[c] * x[c];
    return (s0 + s1) + (s2 + s3);
}

/// The value types of the dense kernels (the `kind` argument of the row kernels).
enum { KIND_F32 = 0, KIND_BF16 = 1, KIND_F16 = 2 };

/// One half-width value (BF16 or F16) as F32, exact.
SQ_INLINE float widen1(int kind, uint16_t h) { return kind == KIND_BF16 ? squeeze_bf16_to_fp32(h) : squeeze_fp16_to_fp32(h); }

/// dot(w [cols] of BF16 or F16 values, x [cols]) with 4 partial sums.
static float dot_half_scalar(const uint16_t *w, int kind, const float *x, size_t cols) {
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t c = 0;
    for (; c + 4 <= cols; c += 4) {
        s0 += widen1(kind, w[c]) * x[c];
        s1 += widen1(kind, w[c + 1]) * x[c + 1];
        s2 += widen1(kind, w[c + 2]) * x[c + 2];
        s3 += widen1(kind, w[c + 3]) * x[c + 3];
    }
    for (; c < cols; c++) s0 += widen1(kind, w[c]) * x[c];
    return (s0 + s1) + (s2 + s3);
}

/// HF layout, any vector width the compiler picks: y [c1 - c0] = x [in] . W[:, c0..c1).
/// Panels of 1024 output columns keep the y panel in L1 while 4 input rows stream through it.
SQ_INLINE void gemv_f32_io_body(const float *W, size_t in, size_t out, size_t c0, size_t c1,
                                const float *x, float *y) {
    enum { PANEL = 1024 };
    for (size_t p0 = c0; p0 < c1; p0 += PANEL) {
        const size_t p1 = c1 - p0 < PANEL ? c1 : p0 + PANEL, n = p1 - p0;
        float *restrict yp = y + (p0 - c0);
        for (size_t j = 0; j < n; j++) yp[j] = 0;
        size_t i = 0;
        for (; i + 4 <= in; i += 4) {
            const float *restrict w0 = W + i * out + p0, *restrict w1 = w0 + out;
            const float *restrict w2 = w1 + out, *restrict w3 = w2 + out;
            const float a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
            for (size_t j = 0; j < n; j++) yp[j] += (a0 * w0[j] + a1 * w1[j]) + (a2 * w2[j] + a3 * w3[j]);
        }
        for (; i < in; i++) {
            const float *restrict w0 = W + i * out + p0;
            const float a0 = x[i];
            for (size_t j = 0; j < n; j++) yp[j] += a0 * w0[j];
        }
    }
}

static void gemv_f32_io_scalar(const float *W, size_t in, size_t out, size_t c0, size_t c1, const float *x, float *y) {
    gemv_f32_io_body(W, in, out, c0, c1, x, y);
}

#if SQ_X86
// ---------------------------------------------------------------------------------------------
// AVX-512
// ---------------------------------------------------------------------------------------------

/// Mask of the first n (< 16) lanes.
SQ_INLINE __mmask16 tail16(size_t n) { return (__mmask16)((1u << n) - 1u); }

/// 16 half-width values at p (BF16 or F16) as F32, exact; masked loads read only lanes in k.
SQ_INLINE SQ_AVX512 __m512 widen16(int kind, const uint16_t *p, __mmask16 k) {
    const __m256i h = _mm256_maskz_loadu_epi16(k, p);
    return kind == KIND_BF16 ? sq_widen16_bf16(h) : _mm512_cvtph_ps(h);
}

/// NR rows (1 or 4) of F32, BF16 or F16 weights (`kind`) starting at w (row stride cols).
SQ_INLINE SQ_AVX512 void rows_avx512(const void *w, int kind, size_t cols, size_t rs, const float *x, float *y, size_t ys, int NR) {
    __m512 acc[4][2];
    for (int i = 0; i < NR; i++) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const float *wf = (const float *)w;
    const uint16_t *wh = (const uint16_t *)w;
    size_t c = 0;
    for (; c + 32 <= cols; c += 32) {
        const __m512 x0 = _mm512_loadu_ps(x + c), x1 = _mm512_loadu_ps(x + c + 16);
        for (int i = 0; i < NR; i++) {
            __m512 w0, w1;
            if (kind != KIND_F32) {
                w0 = widen16(kind, wh + i * rs + c, 0xFFFF);
                w1 = widen16(kind, wh + i * rs + c + 16, 0xFFFF);
            } else {
                w0 = _mm512_loadu_ps(wf + i * rs + c);
                w1 = _mm512_loadu_ps(wf + i * rs + c + 16);
            }
            acc[i][0] = _mm512_fmadd_ps(w0, x0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(w1, x1, acc[i][1]);
        }
    }
    for (; c < cols; c += 16) {
        const __mmask16 k = cols - c >= 16 ? (__mmask16)0xFFFF : tail16(cols - c);
        const __m512 x0 = _mm512_maskz_loadu_ps(k, x + c);
        for (int i = 0; i < NR; i++) {
            const __m512 w0 = kind != KIND_F32 ? widen16(kind, wh + i * rs + c, k) : _mm512_maskz_loadu_ps(k, wf + i * rs + c);
            acc[i][0] = _mm512_fmadd_ps(w0, x0, acc[i][0]);
        }
    }
    for (int i = 0; i < NR; i++) y[i * ys] = _mm512_reduce_add_ps(_mm512_add_ps(acc[i][0], acc[i][1]));
}

SQ_AVX512 static void gemv_f32_avx512(const float *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;
    for (size_t i = 0; i < q; i++) rows_avx512(W + (r0 + i) * cols, KIND_F32, cols, q * cols, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) rows_avx512(W + r * cols, KIND_F32, cols, cols, x, y + (r - r0), 1, 1);
}

SQ_AVX512 static void gemv_half_avx512(const uint16_t *W, int kind, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;
    for (size_t i = 0; i < q; i++) rows_avx512(W + (r0 + i) * cols, kind, cols, q * cols, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) rows_avx512(W + r * cols, kind, cols, cols, x, y + (r - r0), 1, 1);
}

SQ_AVX512 static void gemv_f32_io_avx512(const float *W, size_t in, size_t out, size_t c0, size_t c1, const float *x, float *y) {
    gemv_f32_io_body(W, in, out, c0, c1, x, y);
}

/// Sum of p [n]: 4 accumulators of 16, masked tail.
SQ_AVX512 static double probe_avx512(const float *p, size_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + i + 48));
    }
    for (; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail16(n - i);
        a0 = _mm512_add_ps(a0, _mm512_maskz_loadu_ps(k, p + i));
    }
    return (double)_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------

SQ_INLINE SQ_AVX2 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// 8 half-width values at p (BF16 or F16) as F32, exact.
SQ_INLINE SQ_AVX2 __m256 widen8(int kind, const uint16_t *p) {
    const __m128i h = _mm_loadu_si128((const __m128i *)p);
    return kind == KIND_BF16 ? sq_widen8_bf16(h) : _mm256_cvtph_ps(h);
}

/// NR rows (1 or 4) of F32, BF16 or F16 weights (`kind`): 16 columns a step, 8 at the end, then scalar.
SQ_INLINE SQ_AVX2 void rows_avx2(const void *w, int kind, size_t cols, size_t rs, const float *x, float *y, size_t ys, int NR) {
    __m256 acc[4][2];
    for (int i = 0; i < NR; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const float *wf = (const float *)w;
    const uint16_t *wh = (const uint16_t *)w;
    size_t c = 0;
    for (; c + 16 <= cols; c += 16) {
        const __m256 x0 = _mm256_loadu_ps(x + c), x1 = _mm256_loadu_ps(x + c + 8);
        for (int i = 0; i < NR; i++) {
            __m256 w0, w1;
            if (kind != KIND_F32) {
                w0 = widen8(kind, wh + i * rs + c);
                w1 = widen8(kind, wh + i * rs + c + 8);
            } else {
                w0 = _mm256_loadu_ps(wf + i * rs + c);
                w1 = _mm256_loadu_ps(wf + i * rs + c + 8);
            }
            acc[i][0] = _mm256_fmadd_ps(w0, x0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(w1, x1, acc[i][1]);
        }
    }
    if (c + 8 <= cols) {
        const __m256 x0 = _mm256_loadu_ps(x + c);
        for (int i = 0; i < NR; i++) {
            const __m256 w0 = kind != KIND_F32 ? widen8(kind, wh + i * rs + c) : _mm256_loadu_ps(wf + i * rs + c);
            acc[i][0] = _mm256_fmadd_ps(w0, x0, acc[i][0]);
        }
        c += 8;
    }
    for (int i = 0; i < NR; i++) {
        float s = hsum256(_mm256_add_ps(acc[i][0], acc[i][1]));
        for (size_t t = c; t < cols; t++)
            s += (kind != KIND_F32 ? widen1(kind, wh[i * rs + t]) : wf[i * rs + t]) * x[t];
        y[i * ys] = s;
    }
}

SQ_AVX2 static void gemv_f32_avx2(const float *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;
    for (size_t i = 0; i < q; i++) rows_avx2(W + (r0 + i) * cols, KIND_F32, cols, q * cols, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) rows_avx2(W + r * cols, KIND_F32, cols, cols, x, y + (r - r0), 1, 1);
}

SQ_AVX2 static void gemv_half_avx2(const uint16_t *W, int kind, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;
    for (size_t i = 0; i < q; i++) rows_avx2(W + (r0 + i) * cols, kind, cols, q * cols, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) rows_avx2(W + r * cols, kind, cols, cols, x, y + (r - r0), 1, 1);
}

SQ_AVX2 static void gemv_f32_io_avx2(const float *W, size_t in, size_t out, size_t c0, size_t c1, const float *x, float *y) {
    gemv_f32_io_body(W, in, out, c0, c1, x, y);
}

SQ_AVX2 static double probe_avx2(const float *p, size_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(p + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(p + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(p + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(p + i + 24));
    }
    double s = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += p[i];
    return s;
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

void squeeze_gemv_f32(const float *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_f32_avx512(W, cols, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_f32_avx2(W, cols, r0, r1, x, y); return; }
#endif
    for (size_t r = r0; r < r1; r++) y[r - r0] = dot_f32_scalar(W + r * cols, x, cols);
}

/// BF16 or F16 rows (`kind`).
static void gemv_half(const uint16_t *W, int kind, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_half_avx512(W, kind, cols, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_half_avx2(W, kind, cols, r0, r1, x, y); return; }
#endif
    for (size_t r = r0; r < r1; r++) y[r - r0] = dot_half_scalar(W + r * cols, kind, x, cols);
}

void squeeze_gemv_bf16(const uint16_t *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    gemv_half(W, KIND_BF16, cols, r0, r1, x, y);
}

void squeeze_gemv_f16(const uint16_t *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    gemv_half(W, KIND_F16, cols, r0, r1, x, y);
}

void squeeze_gemv_f32_io(const float *W, size_t in, size_t out, size_t c0, size_t c1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_f32_io_avx512(W, in, out, c0, c1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_f32_io_avx2(W, in, out, c0, c1, x, y); return; }
#endif
    gemv_f32_io_scalar(W, in, out, c0, c1, x, y);
}

/// dst [r1 - r0, cols] = W rows [r0, r1): a copy.
void squeeze_decode_rows_f32(const float *W, size_t cols, size_t r0, size_t r1, float *dst) {
    if (r1 > r0) memcpy(dst, W + r0 * cols, (r1 - r0) * cols * sizeof(float));
}

/// dst [r1 - r0, cols] = W rows [r0, r1) widened (rows are contiguous: one conversion).
void squeeze_decode_rows_bf16(const uint16_t *W, size_t cols, size_t r0, size_t r1, float *dst) {
    if (r1 > r0) squeeze_bf16_to_f32_n(W + r0 * cols, dst, (r1 - r0) * cols);
}

/// dst [r1 - r0, cols] = W rows [r0, r1) widened from F16 (exact).
void squeeze_decode_rows_f16(const uint16_t *W, size_t cols, size_t r0, size_t r1, float *dst) {
    if (r1 > r0) squeeze_f16_to_f32_n(W + r0 * cols, dst, (r1 - r0) * cols);
}

double squeeze_read_bandwidth_probe(const float *p, size_t n) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) return probe_avx512(p, n);
    if (isa >= SQUEEZE_ISA_AVX2) return probe_avx2(p, n);
#endif
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    for (; i < n; i++) s0 += p[i];
    return (double)((s0 + s1) + (s2 + s3));
}
