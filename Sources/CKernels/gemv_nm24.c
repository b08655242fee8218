// 2:4 sparse weights: two kept values per group of four + 2-bit positions, GEMV and
// decode_rows, F32 or BF16 values.
//
// W [rows, cols], cols % 4 == 0, G = cols / 4 groups per row:
//   values [rows, 2G]: the two kept values of group g at 2g, 2g + 1 (increasing position);
//   positions [rows, PB], PB = (G + 1) / 2 bytes: group g's nibble is byte g / 2 (low nibble
//        for even g), nibble = p0 | p1 << 2. So value i of a row has its position in bits
//        2i, 2i + 1 of the row's little-endian position bytes: a u32 of positions covers 16
//        values (8 groups, 32 columns).
//   y[r - r0] = sum_g v[2g] x[4g + p0(g)] + v[2g + 1] x[4g + p1(g)]
// The vector kernels build each value's column index from those bit pairs and gather x from
// registers with vpermt2ps (AVX-512: 32 columns) or two vpermps (AVX2: 16 columns).
#include "internal.h"

#define SQ_INLINE static inline __attribute__((always_inline))

// =============================================================================================
// 2:4: packing
// =============================================================================================

int squeeze_nm24_pack_f32(const float *W, size_t rows, size_t cols, float *values, uint8_t *positions,
                          size_t *bad_row, size_t *bad_group) {
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols);
    for (size_t r = 0; r < rows; r++) {
        uint8_t *pr = positions + r * PB;
        memset(pr, 0, PB);
        for (size_t g = 0; g < G; g++) {
            const float *w = W + r * cols + 4 * g;
            unsigned kept[2], n = 0;
            for (unsigned p = 0; p < 4; p++) {
                if (w[p] != 0.0f || w[p] != w[p]) {  // non-zero or NaN
                    if (n == 2) {
                        if (bad_row) *bad_row = r;
                        if (bad_group) *bad_group = g;
                        return -1;
                    }
                    kept[n++] = p;
                }
            }
            // Fill up with the lowest free positions, then order: p0 < p1.
            for (unsigned p = 0; n < 2 && p < 4; p++)
                if (n == 0 || kept[0] != p) kept[n++] = p;
            if (kept[0] > kept[1]) { const unsigned t = kept[0]; kept[0] = kept[1]; kept[1] = t; }
            values[r * 2 * G + 2 * g] = w[kept[0]];
            values[r * 2 * G + 2 * g + 1] = w[kept[1]];
            pr[g / 2] |= (uint8_t)((kept[0] | kept[1] << 2) << (4 * (g & 1)));
        }
    }
    return 0;
}

// =============================================================================================
// 2:4: scalar
// =============================================================================================

SQ_INLINE float nm24_dot_scalar(const void *v, int bf16, const uint8_t *pr, size_t G, const float *x) {
    const float *vf = (const float *)v;
    const uint16_t *vh = (const uint16_t *)v;
    float s0 = 0, s1 = 0;
    for (size_t g = 0; g < G; g++) {
        const unsigned nib = (unsigned)(pr[g / 2] >> (4 * (g & 1))) & 15u;
        const float w0 = bf16 ? squeeze_bf16_to_fp32(vh[2 * g]) : vf[2 * g];
        const float w1 = bf16 ? squeeze_bf16_to_fp32(vh[2 * g + 1]) : vf[2 * g + 1];
        s0 += w0 * x[4 * g + (nib & 3)];
        s1 += w1 * x[4 * g + (nib >> 2)];
    }
    return s0 + s1;
}

SQ_INLINE void nm24_decode_scalar(const void *v, int bf16, const uint8_t *pr, size_t G, float *d) {
    const float *vf = (const float *)v;
    const uint16_t *vh = (const uint16_t *)v;
    for (size_t g = 0; g < G; g++) {
        const unsigned nib = (unsigned)(pr[g / 2] >> (4 * (g & 1))) & 15u;
        d[4 * g] = d[4 * g + 1] = d[4 * g + 2] = d[4 * g + 3] = 0.0f;
        d[4 * g + (nib & 3)] = bf16 ? squeeze_bf16_to_fp32(vh[2 * g]) : vf[2 * g];
        d[4 * g + (nib >> 2)] = bf16 ? squeeze_bf16_to_fp32(vh[2 * g + 1]) : vf[2 * g + 1];
    }
}

#if SQ_X86
// =============================================================================================
// 2:4: AVX-512, 8 groups (32 columns, 16 values) a step
// =============================================================================================

/// The position bits of groups [g, g + n) of a row (n <= 8; g even) as a u32, without reading
/// past the row's (n + 1) / 2 bytes.
static inline uint32_t nm24_bits(const uint8_t *pr, size_t g, size_t n) {
    uint32_t P = 0;
    if (n == 8) {
        memcpy(&P, pr + g / 2, 4);
        return P;
    }
    for (size_t b = 0; b < (n + 1) / 2; b++) P |= (uint32_t)pr[g / 2 + b] << (8 * b);
    if (n & 1) P &= (1u << (4 * n)) - 1u;  // drop the padding nibble
    return P;
}

/// Column index (0..31) of each of 16 values from their position bits P: 4 (i / 2) + bits 2i..2i+1.
SQ_INLINE SQ_AVX512 __m512i nm24_index16(uint32_t P) {
    const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
    return _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)P), shifts), _mm512_set1_epi32(3)), base);
}

/// 16 values (the first n valid, n <= 16) as F32; masked so nothing past them is read.
SQ_INLINE SQ_AVX512 __m512 nm24_values16(const void *v, int bf16, size_t n) {
    const __mmask16 k = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1u);
    if (bf16) return sq_widen16_bf16(_mm256_maskz_loadu_epi16(k, v));
    return _mm512_maskz_loadu_ps(k, v);
}

/// Software prefetch distance (bytes) for 2:4 values (measured: the hardware prefetchers alone
/// left DRAM-resident matrices ~20% below the read bandwidth on Zen 5).
#define SQ_NM24_PREFETCH 1024

/// x [4g, 4g + 4n) as two vectors of 16 (n <= 8 groups; masked past 4n columns).
SQ_INLINE SQ_AVX512 void nm24_x32(const float *x, size_t g, size_t n, __m512 *xlo, __m512 *xhi) {
    const float *xg = x + 4 * g;
    if (n == 8) {
        *xlo = _mm512_loadu_ps(xg);
        *xhi = _mm512_loadu_ps(xg + 16);
    } else {
        const size_t c = 4 * n;
        *xlo = _mm512_maskz_loadu_ps(c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << c) - 1u), xg);
        *xhi = _mm512_maskz_loadu_ps(c > 16 ? (__mmask16)((1u << (c - 16)) - 1u) : (__mmask16)0, xg + 16);
    }
}

/// One step of one row: groups [g, g + n) (n <= 8) against x's 32 columns there, into acc.
SQ_INLINE SQ_AVX512 __m512 nm24_step_avx512(const void *v, int bf16, const uint8_t *pr, size_t g, size_t n,
                                            __m512 xlo, __m512 xhi, __m512 acc) {
    const size_t es = bf16 ? 2 : 4;
    const __m512 w = nm24_values16((const char *)v + es * 2 * g, bf16, 2 * n);
    const __m512 xs = _mm512_permutex2var_ps(xlo, nm24_index16(nm24_bits(pr, g, n)), xhi);
    return _mm512_fmadd_ps(w, xs, acc);
}

/// One row: two accumulators (even and odd steps of 8 groups), the tail step masked.
SQ_INLINE SQ_AVX512 float nm24_row_avx512(const char *v, int bf16, const uint8_t *pr, size_t G, const float *x) {
    const size_t es = bf16 ? 2 : 4;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, xlo, xhi;
    size_t g = 0;
    for (; g + 16 <= G; g += 16) {
        _mm_prefetch(v + es * 2 * g + SQ_NM24_PREFETCH, _MM_HINT_T0);
        nm24_x32(x, g, 8, &xlo, &xhi);
        a0 = nm24_step_avx512(v, bf16, pr, g, 8, xlo, xhi, a0);
        nm24_x32(x, g + 8, 8, &xlo, &xhi);
        a1 = nm24_step_avx512(v, bf16, pr, g + 8, 8, xlo, xhi, a1);
    }
    for (; g < G; g += 8) {
        const size_t n = G - g < 8 ? G - g : 8;
        nm24_x32(x, g, n, &xlo, &xhi);
        a0 = nm24_step_avx512(v, bf16, pr, g, n, xlo, xhi, a0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

SQ_AVX512 static void gemv_nm24_avx512(const void *values, int bf16, const uint8_t *positions, size_t cols,
                                       size_t r0, size_t r1, const float *x, float *y) {
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++)
        y[r - r0] = nm24_row_avx512((const char *)values + r * 2 * G * es, bf16, positions + r * PB, G, x);
}

/// Groups [g, g + n) (n <= 8) to 4n dense columns at d: output column c of the step takes value
/// 2 (c / 4) + (p1 == c % 4) where c % 4 is p0 or p1, else 0.
SQ_INLINE SQ_AVX512 void nm24_decode_step_avx512(const void *v, int bf16, const uint8_t *pr, size_t g, size_t n, float *d) {
    const size_t es = bf16 ? 2 : 4;
    const __m512 w = nm24_values16((const char *)v + es * 2 * g, bf16, 2 * n);
    const __m512i P = _mm512_set1_epi32((int)nm24_bits(pr, g, n));
    const __m512i pos = _mm512_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3);
    const __m512i three = _mm512_set1_epi32(3);
    for (int h = 0; h < 2; h++) {  // output columns [16h, 16h + 16): groups 4h .. 4h + 3
        const int s = 16 * h;
        const __m512i nib = _mm512_srlv_epi32(P, _mm512_setr_epi32(s, s, s, s, s + 4, s + 4, s + 4, s + 4,
                                                                   s + 8, s + 8, s + 8, s + 8, s + 12, s + 12, s + 12, s + 12));
        const __mmask16 k0 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(nib, three), pos);
        const __mmask16 k1 = _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_srli_epi32(nib, 2), three), pos);
        const int b = 8 * h;
        const __m512i base = _mm512_setr_epi32(b, b, b, b, b + 2, b + 2, b + 2, b + 2,
                                               b + 4, b + 4, b + 4, b + 4, b + 6, b + 6, b + 6, b + 6);
        const __m512i idx = _mm512_mask_add_epi32(base, k1, base, _mm512_set1_epi32(1));
        const __m512 out = _mm512_maskz_permutexvar_ps(k0 | k1, idx, w);
        const size_t c = 4 * n;
        if (c >= (size_t)s + 16) _mm512_storeu_ps(d + 4 * g + s, out);
        else if (c > (size_t)s) _mm512_mask_storeu_ps(d + 4 * g + s, (__mmask16)((1u << (c - s)) - 1u), out);
    }
}

SQ_AVX512 static void decode_nm24_avx512(const void *values, int bf16, const uint8_t *positions, size_t cols,
                                         size_t r0, size_t r1, float *dst) {
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++) {
        const char *v = (const char *)values + es * r * 2 * G;
        for (size_t g = 0; g < G; g += 8)
            nm24_decode_step_avx512(v, bf16, positions + r * PB, g, G - g < 8 ? G - g : 8, dst + (r - r0) * cols);
    }
}

// =============================================================================================
// 2:4: AVX2, 4 groups (16 columns, 8 values) a step; fewer than 4 groups left: scalar
// =============================================================================================

/// Column index (0..15) of each of 8 values from position bits P (16 bits).
SQ_INLINE SQ_AVX2 __m256i nm24_index8(uint32_t P) {
    const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    const __m256i base = _mm256_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12);
    return _mm256_add_epi32(_mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)P), shifts), _mm256_set1_epi32(3)), base);
}

SQ_INLINE SQ_AVX2 __m256 nm24_values8(const void *v, int bf16) {
    if (bf16) return sq_widen8_bf16(_mm_loadu_si128((const __m128i *)v));
    return _mm256_loadu_ps((const float *)v);
}

SQ_INLINE SQ_AVX2 uint32_t nm24_bits16(const uint8_t *pr, size_t g) { return (uint32_t)pr[g / 2] | (uint32_t)pr[g / 2 + 1] << 8; }

SQ_INLINE SQ_AVX2 __m256 nm24_step_avx2(const void *v, int bf16, const uint8_t *pr, size_t g, const float *x, __m256 acc) {
    const size_t es = bf16 ? 2 : 4;
    const __m256i idx = nm24_index8(nm24_bits16(pr, g));
    const __m256 xlo = _mm256_loadu_ps(x + 4 * g), xhi = _mm256_loadu_ps(x + 4 * g + 8);
    // Values 0..3 index columns 0..7 (xlo), values 4..7 columns 8..15 (xhi; vpermps uses idx & 7).
    const __m256 xs = _mm256_blend_ps(_mm256_permutevar8x32_ps(xlo, idx), _mm256_permutevar8x32_ps(xhi, idx), 0xF0);
    return _mm256_fmadd_ps(nm24_values8((const char *)v + es * 2 * g, bf16), xs, acc);
}

SQ_AVX2 static void gemv_nm24_avx2(const void *values, int bf16, const uint8_t *positions, size_t cols,
                                   size_t r0, size_t r1, const float *x, float *y) {
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++) {
        const char *v = (const char *)values + es * r * 2 * G;
        const uint8_t *pr = positions + r * PB;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        size_t g = 0;
        for (; g + 8 <= G; g += 8) {
            _mm_prefetch(v + es * 2 * g + SQ_NM24_PREFETCH, _MM_HINT_T0);
            a0 = nm24_step_avx2(v, bf16, pr, g, x, a0);
            a1 = nm24_step_avx2(v, bf16, pr, g + 4, x, a1);
        }
        if (g + 4 <= G) {
            a0 = nm24_step_avx2(v, bf16, pr, g, x, a0);
            g += 4;
        }
        const __m256 a = _mm256_add_ps(a0, a1);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        float t = _mm_cvtss_f32(s);
        if (g < G) t += nm24_dot_scalar(v + es * 2 * g, bf16, pr + g / 2, G - g, x + 4 * g);
        y[r - r0] = t;
    }
}

SQ_AVX2 static void decode_nm24_avx2(const void *values, int bf16, const uint8_t *positions, size_t cols,
                                     size_t r0, size_t r1, float *dst) {
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols), es = bf16 ? 2 : 4;
    const __m256i pos = _mm256_setr_epi32(0, 1, 2, 3, 0, 1, 2, 3), three = _mm256_set1_epi32(3);
    for (size_t r = r0; r < r1; r++) {
        const char *v = (const char *)values + es * r * 2 * G;
        const uint8_t *pr = positions + r * PB;
        float *d = dst + (r - r0) * cols;
        size_t g = 0;
        for (; g + 4 <= G; g += 4) {
            const __m256 w = nm24_values8(v + es * 2 * g, bf16);
            const __m256i P = _mm256_set1_epi32((int)nm24_bits16(pr, g));
            for (int h = 0; h < 2; h++) {  // output columns [8h, 8h + 8): groups 2h, 2h + 1
                const int s = 8 * h, b = 4 * h;
                const __m256i nib = _mm256_srlv_epi32(P, _mm256_setr_epi32(s, s, s, s, s + 4, s + 4, s + 4, s + 4));
                const __m256i k0 = _mm256_cmpeq_epi32(_mm256_and_si256(nib, three), pos);
                const __m256i k1 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_srli_epi32(nib, 2), three), pos);
                // value index: 2 (group) + 1 where p1 matches (k1 is -1 there: subtract it)
                const __m256i idx = _mm256_sub_epi32(_mm256_setr_epi32(b, b, b, b, b + 2, b + 2, b + 2, b + 2), k1);
                const __m256 out = _mm256_and_ps(_mm256_permutevar8x32_ps(w, idx), _mm256_castsi256_ps(_mm256_or_si256(k0, k1)));
                _mm256_storeu_ps(d + 4 * g + s, out);
            }
        }
        if (g < G) nm24_decode_scalar(v + es * 2 * g, bf16, pr + g / 2, G - g, d + 4 * g);
    }
}
#endif

// =============================================================================================
// 2:4: dispatch
// =============================================================================================

void squeeze_gemv_nm24_f32(const float *values, const uint8_t *positions, size_t cols,
                           size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_nm24_avx512(values, 0, positions, cols, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_nm24_avx2(values, 0, positions, cols, r0, r1, x, y); return; }
#endif
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols);
    for (size_t r = r0; r < r1; r++) y[r - r0] = nm24_dot_scalar(values + r * 2 * G, 0, positions + r * PB, G, x);
}

void squeeze_gemv_nm24_bf16(const uint16_t *values, const uint8_t *positions, size_t cols,
                            size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_nm24_avx512(values, 1, positions, cols, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_nm24_avx2(values, 1, positions, cols, r0, r1, x, y); return; }
#endif
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols);
    for (size_t r = r0; r < r1; r++) y[r - r0] = nm24_dot_scalar(values + r * 2 * G, 1, positions + r * PB, G, x);
}

void squeeze_decode_rows_nm24_f32(const float *values, const uint8_t *positions, size_t cols,
                                  size_t r0, size_t r1, float *dst) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { decode_nm24_avx512(values, 0, positions, cols, r0, r1, dst); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_nm24_avx2(values, 0, positions, cols, r0, r1, dst); return; }
#endif
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols);
    for (size_t r = r0; r < r1; r++) nm24_decode_scalar(values + r * 2 * G, 0, positions + r * PB, G, dst + (r - r0) * cols);
}

void squeeze_decode_rows_nm24_bf16(const uint16_t *values, const uint8_t *positions, size_t cols,
                                   size_t r0, size_t r1, float *dst) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { decode_nm24_avx512(values, 1, positions, cols, r0, r1, dst); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_nm24_avx2(values, 1, positions, cols, r0, r1, dst); return; }
#endif
    const size_t G = cols / 4, PB = squeeze_nm24_position_bytes(cols);
    for (size_t r = r0; r < r1; r++) nm24_decode_scalar(values + r * 2 * G, 1, positions + r * PB, G, dst + (r - r0) * cols);
}
