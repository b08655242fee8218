// GEMV and decode_rows for ggml's Q8_0 / Q4_0 blocks, with F32 activations (the activations
// are NOT quantized: each block is dequantized in registers and multiplied in F32).
//
//   W [rows, nb] blocks, nb = cols / 32 (cols % 32 == 0); block b of row r holds W[r, 32b .. 32b+32)
//   y[r - r0] = sum_b d(r, b) * sum_j q(r, b, j) * x[32b + j]      x [cols], y [r1 - r0]
//
// The per-block partial sum is scaled once by d (one FMA into the row's accumulator). Vector
// paths take 4 rows at a time so one load of x's 32 values feeds 4 blocks; the 4 rows are a
// quarter of the range apart (4 sequential streams: 4 adjacent rows, under 1 KB apart, made the
// hardware prefetchers lose track and measured 2-5x slower from DRAM on Zen 5). With F32
// activations these kernels are compute bound well before memory bound (Q4_0 most: ~7 vector
// ops per 18-byte block and row).
//
// decode_rows: dst[r - r0, 32b + j] = fp16_to_fp32(d) * (float)q, one F32 multiply (exact and
// the same on every path; F16C's vcvtph2ps agrees with squeeze_fp16_to_fp32 on every input).
#pragma STDC FP_CONTRACT OFF
#include "internal.h"

#define SQ_INLINE static inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Scalar
// ---------------------------------------------------------------------------------------------

static float dot_q8_0_scalar(const squeeze_block_q8_0 *w, size_t nb, const float *x) {
    float acc = 0;
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        float s0 = 0, s1 = 0;
        for (int j = 0; j < SQUEEZE_QK; j += 2) {
            s0 += (float)w[b].qs[j] * xb[j];
            s1 += (float)w[b].qs[j + 1] * xb[j + 1];
        }
        acc += squeeze_fp16_to_fp32(w[b].d) * (s0 + s1);
    }
    return acc;
}

static float dot_q4_0_scalar(const squeeze_block_q4_0 *w, size_t nb, const float *x) {
    float acc = 0;
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        float s0 = 0, s1 = 0;
        for (int j = 0; j < SQUEEZE_QK / 2; j++) {
            const uint8_t v = w[b].qs[j];
            s0 += (float)((int)(v & 15) - 8) * xb[j];
            s1 += (float)((int)(v >> 4) - 8) * xb[j + SQUEEZE_QK / 2];
        }
        acc += squeeze_fp16_to_fp32(w[b].d) * (s0 + s1);
    }
    return acc;
}

static void decode_q8_0_scalar(const squeeze_block_q8_0 *w, size_t nb, float *dst) {
    for (size_t b = 0; b < nb; b++) {
        const float d = squeeze_fp16_to_fp32(w[b].d);
        for (int j = 0; j < SQUEEZE_QK; j++) dst[b * SQUEEZE_QK + j] = d * (float)w[b].qs[j];
    }
}

static void decode_q4_0_scalar(const squeeze_block_q4_0 *w, size_t nb, float *dst) {
    for (size_t b = 0; b < nb; b++) {
        const float d = squeeze_fp16_to_fp32(w[b].d);
        for (int j = 0; j < SQUEEZE_QK / 2; j++) {
            const uint8_t v = w[b].qs[j];
            dst[b * SQUEEZE_QK + j] = d * (float)((int)(v & 15) - 8);
            dst[b * SQUEEZE_QK + j + SQUEEZE_QK / 2] = d * (float)((int)(v >> 4) - 8);
        }
    }
}

#if SQ_X86
// ---------------------------------------------------------------------------------------------
// AVX-512: a block is two vectors of 16.
// ---------------------------------------------------------------------------------------------

/// fp16 scale -> 16 lanes of F32 (vpbroadcastw + vcvtph2ps: one op fewer than vcvtph2ps +
/// vbroadcastss; Q8_0 measured ~25% faster from L2).
SQ_INLINE SQ_AVX512 __m512 scale16(uint16_t d) { return _mm512_cvtph_ps(_mm256_set1_epi16((short)d)); }

/// Q8_0 block -> q[0..16), q[16..32) as F32.
SQ_INLINE SQ_AVX512 void q8_0_codes16(const squeeze_block_q8_0 *b, __m512 *lo, __m512 *hi) {
    *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)b->qs)));
    *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b->qs + 16))));
}

/// Q4_0 block -> q - 8 for [0..16) (low nibbles) and [16..32) (high nibbles) as F32: vpermps
/// looks each nibble up in {-8, ..., 7} (it reads the low 4 bits of each 32-bit index).
SQ_INLINE SQ_AVX512 void q4_0_codes16(const squeeze_block_q4_0 *b, __m512 lut, __m512 *lo, __m512 *hi) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b->qs));
    *lo = _mm512_permutexvar_ps(v, lut);
    *hi = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut);
}

SQ_INLINE SQ_AVX512 __m512 q4_lut16(void) {
    return _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
}

/// NR rows (1 or 4) from row pointer w (row stride nb blocks); q4 selects the block type.
SQ_INLINE SQ_AVX512 void quant_rows_avx512(const void *w, int q4, size_t nb, size_t rs, const float *x, float *y, size_t ys, int NR) {
    const squeeze_block_q8_0 *w8 = (const squeeze_block_q8_0 *)w;
    const squeeze_block_q4_0 *w4 = (const squeeze_block_q4_0 *)w;
    const __m512 lut = q4_lut16();
    __m512 acc[4];
    for (int i = 0; i < NR; i++) acc[i] = _mm512_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const __m512 x0 = _mm512_loadu_ps(x + b * SQUEEZE_QK), x1 = _mm512_loadu_ps(x + b * SQUEEZE_QK + 16);
        for (int i = 0; i < NR; i++) {
            __m512 lo, hi;
            uint16_t d;
            if (q4) {
                q4_0_codes16(w4 + i * rs + b, lut, &lo, &hi);
                d = w4[i * rs + b].d;
            } else {
                q8_0_codes16(w8 + i * rs + b, &lo, &hi);
                d = w8[i * rs + b].d;
            }
            const __m512 p = _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
            acc[i] = _mm512_fmadd_ps(scale16(d), p, acc[i]);
        }
    }
    for (int i = 0; i < NR; i++) y[i * ys] = _mm512_reduce_add_ps(acc[i]);
}

SQ_AVX512 static void gemv_q8_0_avx512(const squeeze_block_q8_0 *W, size_t nb, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;  // 4 rows a quarter of the range apart: 4 sequential streams
    for (size_t i = 0; i < q; i++) quant_rows_avx512(W + (r0 + i) * nb, 0, nb, q * nb, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) quant_rows_avx512(W + r * nb, 0, nb, nb, x, y + (r - r0), 1, 1);
}

SQ_AVX512 static void gemv_q4_0_avx512(const squeeze_block_q4_0 *W, size_t nb, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;  // 4 rows a quarter of the range apart: 4 sequential streams
    for (size_t i = 0; i < q; i++) quant_rows_avx512(W + (r0 + i) * nb, 1, nb, q * nb, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) quant_rows_avx512(W + r * nb, 1, nb, nb, x, y + (r - r0), 1, 1);
}

/// n blocks (contiguous, any rows) -> dst [32 n].
SQ_AVX512 static void decode_q8_0_avx512(const squeeze_block_q8_0 *w, size_t n, float *dst) {
    for (size_t b = 0; b < n; b++) {
        __m512 lo, hi;
        q8_0_codes16(w + b, &lo, &hi);
        const __m512 d = scale16(w[b].d);
        _mm512_storeu_ps(dst + b * SQUEEZE_QK, _mm512_mul_ps(d, lo));
        _mm512_storeu_ps(dst + b * SQUEEZE_QK + 16, _mm512_mul_ps(d, hi));
    }
}

SQ_AVX512 static void decode_q4_0_avx512(const squeeze_block_q4_0 *w, size_t n, float *dst) {
    const __m512 lut = q4_lut16();
    for (size_t b = 0; b < n; b++) {
        __m512 lo, hi;
        q4_0_codes16(w + b, lut, &lo, &hi);
        const __m512 d = scale16(w[b].d);
        _mm512_storeu_ps(dst + b * SQUEEZE_QK, _mm512_mul_ps(d, lo));
        _mm512_storeu_ps(dst + b * SQUEEZE_QK + 16, _mm512_mul_ps(d, hi));
    }
}

// ---------------------------------------------------------------------------------------------
// AVX2: a block is four vectors of 8.
// ---------------------------------------------------------------------------------------------

SQ_INLINE SQ_AVX2 float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/// 8 signed bytes at p -> 8 F32.
SQ_INLINE SQ_AVX2 __m256 i8x8_to_f32(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

/// A block's 32 codes (q8: q; q4: q - 8) as 4 x 8 F32, in weight order.
SQ_INLINE SQ_AVX2 void codes8x4(const void *blk, int q4, __m256 q[4]) {
    if (q4) {
        const squeeze_block_q4_0 *b = (const squeeze_block_q4_0 *)blk;
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs), m = _mm_set1_epi8(15), e = _mm_set1_epi8(8);
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m), e);                      // q[0..16) - 8
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m), e);   // q[16..32) - 8
        q[0] = i8x8_to_f32(lo);
        q[1] = i8x8_to_f32(_mm_unpackhi_epi64(lo, lo));
        q[2] = i8x8_to_f32(hi);
        q[3] = i8x8_to_f32(_mm_unpackhi_epi64(hi, hi));
    } else {
        const squeeze_block_q8_0 *b = (const squeeze_block_q8_0 *)blk;
        for (int k = 0; k < 4; k++) q[k] = i8x8_to_f32(_mm_loadl_epi64((const __m128i *)(b->qs + 8 * k)));
    }
}

SQ_INLINE SQ_AVX2 void quant_rows_avx2(const void *w, int q4, size_t nb, size_t rs, const float *x, float *y, size_t ys, int NR) {
    const squeeze_block_q8_0 *w8 = (const squeeze_block_q8_0 *)w;
    const squeeze_block_q4_0 *w4 = (const squeeze_block_q4_0 *)w;
    __m256 acc[4];
    for (int i = 0; i < NR; i++) acc[i] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        const __m256 x0 = _mm256_loadu_ps(xb), x1 = _mm256_loadu_ps(xb + 8);
        const __m256 x2 = _mm256_loadu_ps(xb + 16), x3 = _mm256_loadu_ps(xb + 24);
        for (int i = 0; i < NR; i++) {
            __m256 q[4];
            const void *blk = q4 ? (const void *)(w4 + i * rs + b) : (const void *)(w8 + i * rs + b);
            const uint16_t d = q4 ? w4[i * rs + b].d : w8[i * rs + b].d;
            codes8x4(blk, q4, q);
            const __m256 p = _mm256_add_ps(_mm256_fmadd_ps(q[1], x1, _mm256_mul_ps(q[0], x0)),
                                           _mm256_fmadd_ps(q[3], x3, _mm256_mul_ps(q[2], x2)));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_set1_epi16((short)d)), p, acc[i]);
        }
    }
    for (int i = 0; i < NR; i++) y[i * ys] = hsum256(acc[i]);
}

SQ_AVX2 static void gemv_q8_0_avx2(const squeeze_block_q8_0 *W, size_t nb, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;  // 4 rows a quarter of the range apart: 4 sequential streams
    for (size_t i = 0; i < q; i++) quant_rows_avx2(W + (r0 + i) * nb, 0, nb, q * nb, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) quant_rows_avx2(W + r * nb, 0, nb, nb, x, y + (r - r0), 1, 1);
}

SQ_AVX2 static void gemv_q4_0_avx2(const squeeze_block_q4_0 *W, size_t nb, size_t r0, size_t r1, const float *x, float *y) {
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;  // 4 rows a quarter of the range apart: 4 sequential streams
    for (size_t i = 0; i < q; i++) quant_rows_avx2(W + (r0 + i) * nb, 1, nb, q * nb, x, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) quant_rows_avx2(W + r * nb, 1, nb, nb, x, y + (r - r0), 1, 1);
}

SQ_AVX2 static void decode_quant_avx2(const void *w, int q4, size_t n, float *dst) {
    const squeeze_block_q8_0 *w8 = (const squeeze_block_q8_0 *)w;
    const squeeze_block_q4_0 *w4 = (const squeeze_block_q4_0 *)w;
    for (size_t b = 0; b < n; b++) {
        __m256 q[4];
        codes8x4(q4 ? (const void *)(w4 + b) : (const void *)(w8 + b), q4, q);
        const __m256 d = _mm256_cvtph_ps(_mm_set1_epi16((short)(q4 ? w4[b].d : w8[b].d)));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(dst + b * SQUEEZE_QK + 8 * k, _mm256_mul_ps(d, q[k]));
    }
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

void squeeze_gemv_q8_0(const squeeze_block_q8_0 *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t nb = cols / SQUEEZE_QK;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_q8_0_avx512(W, nb, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_q8_0_avx2(W, nb, r0, r1, x, y); return; }
#endif
    for (size_t r = r0; r < r1; r++) y[r - r0] = dot_q8_0_scalar(W + r * nb, nb, x);
}

void squeeze_gemv_q4_0(const squeeze_block_q4_0 *W, size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t nb = cols / SQUEEZE_QK;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_q4_0_avx512(W, nb, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_q4_0_avx2(W, nb, r0, r1, x, y); return; }
#endif
    for (size_t r = r0; r < r1; r++) y[r - r0] = dot_q4_0_scalar(W + r * nb, nb, x);
}

/// dst [r1 - r0, cols]: the rows' blocks are contiguous, so this is one run of blocks.
void squeeze_decode_rows_q8_0(const squeeze_block_q8_0 *W, size_t cols, size_t r0, size_t r1, float *dst) {
    const size_t nb = cols / SQUEEZE_QK, n = r1 > r0 ? (r1 - r0) * nb : 0;
    const squeeze_block_q8_0 *w = W + r0 * nb;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { decode_q8_0_avx512(w, n, dst); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_quant_avx2(w, 0, n, dst); return; }
#endif
    decode_q8_0_scalar(w, n, dst);
}

void squeeze_decode_rows_q4_0(const squeeze_block_q4_0 *W, size_t cols, size_t r0, size_t r1, float *dst) {
    const size_t nb = cols / SQUEEZE_QK, n = r1 > r0 ? (r1 - r0) * nb : 0;
    const squeeze_block_q4_0 *w = W + r0 * nb;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { decode_q4_0_avx512(w, n, dst); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_quant_avx2(w, 1, n, dst); return; }
#endif
    decode_q4_0_scalar(w, n, dst);
}
