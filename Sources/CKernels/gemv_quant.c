// GEMV and decode_rows for ggml's Q8_0 / Q4_0 blocks.
//
//   W [rows, nb] blocks, nb = cols / 32 (cols % 32 == 0); block b of row r holds W[r, 32b .. 32b+32)
//
// GEMV (decode, one row of activations) multiplies in integers, as ggml's vec_dot_q8_0_q8_0 and
// vec_dot_q4_0_q8_0 do: the activations are quantized once per product by the Q8_0 rule
// (squeeze_quantize_activations: int8 codes xq, one F32 scale xd per 32 — ggml rounds that scale
// to fp16, Squeeze keeps it F32), then
//   y[r - r0] = sum_b (fp16_to_fp32(d(r, b)) * xd[b]) * sum_j c(r, b, j) * xq[32b + j]
// with c = q (Q8_0) or q - 8 (Q4_0). The inner sums are exact integers; only the scaling and the
// sum over blocks round. Prefill (decode_rows, then sgemm) keeps F32 activations. The vector path
// is AVX2 (vpmaddubsw: Q8_0 on |q| and xq signed by q; Q4_0 on the unsigned nibbles, then 8 * the
// sum of xq taken off: the same integers, 1.2x faster than multiplying q - 8), used on AVX-512 CPUs
// too; it takes 4 rows a quarter of the range apart (4 sequential streams: 4 adjacent rows,
// under 1 KB apart, made the hardware prefetchers lose track and measured 2-5x slower from DRAM
// on Zen 5), so one load of a block of xq feeds 4 blocks of W. Dequantizing a Q4_0 block in
// registers to multiply F32 activations took ~20 vector ops per block and row on AVX2 (Q4_0
// decoded at half Q8_0's speed); the integer product takes ~10.
//
// decode_rows: dst[r - r0, 32b + j] = fp16_to_fp32(d) * (float)q, one F32 multiply (exact and
// the same on every path; F16C's vcvtph2ps agrees with squeeze_fp16_to_fp32 on every input).
#pragma STDC FP_CONTRACT OFF
#include "internal.h"

#define SQ_INLINE static inline __attribute__((always_inline))

// ---------------------------------------------------------------------------------------------
// Scalar
// ---------------------------------------------------------------------------------------------

/// sum_j c(j) * xq[j] over one block (exact).
static int32_t isum_q8_0(const squeeze_block_q8_0 *w, const int8_t *xq) {
    int32_t s = 0;
    for (int j = 0; j < SQUEEZE_QK; j++) s += (int32_t)w->qs[j] * xq[j];
    return s;
}

static int32_t isum_q4_0(const squeeze_block_q4_0 *w, const int8_t *xq) {
    int32_t s = 0;
    for (int j = 0; j < SQUEEZE_QK / 2; j++) {
        const uint8_t v = w->qs[j];
        s += ((int32_t)(v & 15) - 8) * xq[j] + ((int32_t)(v >> 4) - 8) * xq[j + SQUEEZE_QK / 2];
    }
    return s;
}

/// One row of nb blocks (q4 selects the block type) against quantized activations.
static float dot_quant_scalar(const void *w, int q4, size_t nb, const int8_t *xq, const float *xd) {
    const squeeze_block_q8_0 *w8 = (const squeeze_block_q8_0 *)w;
    const squeeze_block_q4_0 *w4 = (const squeeze_block_q4_0 *)w;
    float acc = 0;
    for (size_t b = 0; b < nb; b++) {
        const int32_t s = q4 ? isum_q4_0(w4 + b, xq + b * SQUEEZE_QK) : isum_q8_0(w8 + b, xq + b * SQUEEZE_QK);
        acc += (squeeze_fp16_to_fp32(q4 ? w4[b].d : w8[b].d) * xd[b]) * (float)s;
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

/// 8 int32 lanes, each the exact sum of 4 products a[j] * x[j] (a unsigned, at most 128 here: pairs
/// stay within int16).
SQ_INLINE SQ_AVX2 __m256i lane_sums(__m256i a, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(a, x), _mm256_set1_epi16(1));
}

/// A Q8_0 block's lane sums of q[j] * x[j]: vpmaddubsw takes |q| and x with q's sign moved onto it.
SQ_INLINE SQ_AVX2 __m256i lane_sums_q8_0(const squeeze_block_q8_0 *b, __m256i x) {
    const __m256i q = _mm256_loadu_si256((const __m256i *)b->qs);
    return lane_sums(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
}

/// A Q4_0 block's lane sums of (q[j] - 8) * x[j], given x8 = each lane's 8 * sum x[j]: the nibbles
/// q (0..15) multiply x unsigned, and the offset comes off once per lane. The same integers as
/// multiplying q - 8, in three fewer instructions per block and row.
SQ_INLINE SQ_AVX2 __m256i lane_sums_q4_0(const squeeze_block_q4_0 *b, __m256i x, __m256i x8) {
    const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
    return _mm256_sub_epi32(lane_sums(_mm256_and_si256(both, _mm256_set1_epi8(15)), x), x8);
}

/// NR rows (1 or 4) from row pointer w (row stride rs blocks) against quantized activations.
SQ_INLINE SQ_AVX2 void quant_rows_avx2(const void *w, int q4, size_t nb, size_t rs, const int8_t *xq, const float *xd,
                                       float *y, size_t ys, int NR) {
    const squeeze_block_q8_0 *w8 = (const squeeze_block_q8_0 *)w;
    const squeeze_block_q4_0 *w4 = (const squeeze_block_q4_0 *)w;
    __m256 acc[4];
    for (int i = 0; i < NR; i++) acc[i] = _mm256_setzero_ps();
    for (size_t b = 0; b < nb; b++) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(xq + b * SQUEEZE_QK));
        const float dx = xd[b];
        // Q4_0: 8 * the sum of x over each lane's 4 positions, once for the NR rows.
        const __m256i x8 = q4 ? _mm256_slli_epi32(lane_sums(_mm256_set1_epi8(1), x), 3) : _mm256_setzero_si256();
        for (int i = 0; i < NR; i++) {
            const float d = _cvtsh_ss(q4 ? w4[i * rs + b].d : w8[i * rs + b].d);
            const __m256i s = q4 ? lane_sums_q4_0(w4 + i * rs + b, x, x8) : lane_sums_q8_0(w8 + i * rs + b, x);
            acc[i] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(s), acc[i]);
        }
    }
    for (int i = 0; i < NR; i++) y[i * ys] = hsum256(acc[i]);
}

SQ_AVX2 static void gemv_quant_avx2(const void *W, int q4, size_t nb, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y) {
    const size_t bytes = q4 ? sizeof(squeeze_block_q4_0) : sizeof(squeeze_block_q8_0);
    const char *base = (const char *)W;
    const size_t q = r1 > r0 ? (r1 - r0) / 4 : 0;  // 4 rows a quarter of the range apart: 4 sequential streams
    for (size_t i = 0; i < q; i++) quant_rows_avx2(base + (r0 + i) * nb * bytes, q4, nb, q * nb, xq, xd, y + i, q, 4);
    for (size_t r = r0 + 4 * q; r < r1; r++) quant_rows_avx2(base + r * nb * bytes, q4, nb, nb, xq, xd, y + (r - r0), 1, 1);
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

/// The AVX2 integer kernel also serves AVX-512 CPUs (one kernel, one rounding order for both).
static void gemv_quant(const void *W, int q4, size_t cols, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y) {
    const size_t nb = cols / SQUEEZE_QK, bytes = q4 ? sizeof(squeeze_block_q4_0) : sizeof(squeeze_block_q8_0);
#if SQ_X86
    if (squeeze_isa() >= SQUEEZE_ISA_AVX2) { gemv_quant_avx2(W, q4, nb, r0, r1, xq, xd, y); return; }
#endif
    for (size_t r = r0; r < r1; r++) y[r - r0] = dot_quant_scalar((const char *)W + r * nb * bytes, q4, nb, xq, xd);
}

void squeeze_gemv_q8_0(const squeeze_block_q8_0 *W, size_t cols, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y) {
    gemv_quant(W, 0, cols, r0, r1, xq, xd, y);
}

void squeeze_gemv_q4_0(const squeeze_block_q4_0 *W, size_t cols, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y) {
    gemv_quant(W, 1, cols, r0, r1, xq, xd, y);
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
