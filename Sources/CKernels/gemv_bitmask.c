// Unstructured sparse weights: bitmask + packed values, GEMV and decode_rows, F32 or BF16 values.
//
// Bitmask form, W [rows, cols]:
//   mask [rows, wpr] u64, wpr = (cols + 63) / 64: bit j of word k of row r <-> W[r, 64k + j] kept
//        (bits past cols are 0);
//   values: the kept values, row-major; row r's are values[row_start[r] .. row_start[r + 1]).
//   y[r - r0] = sum over kept (r, c) of W[r, c] * x[c]
// The AVX-512 kernels expand the packed values to their columns in registers (BF16: VBMI2's
// vpexpandw expand-load, 32 columns at a time; F32, or BF16 without VBMI2: a masked load of the
// popcount values + vexpandps, 16 columns at a time): no loop over bits. x is read with the same
// mask (never past cols, and pruned columns of x never enter the sum). Values are prefetched in
// software (their addresses depend on the mask words). AVX2 has no expand: a byte of mask
// selects a vpermps index vector from a 256-entry table. The scalar path walks the set bits.
#include "internal.h"

#define SQ_INLINE static inline __attribute__((always_inline))

static inline size_t words_per_row(size_t cols) { return (cols + 63) / 64; }

void squeeze_bitmask_row_starts(const uint64_t *mask, size_t rows, size_t cols, uint64_t *row_start) {
    const size_t wpr = words_per_row(cols);
    uint64_t n = 0;
    for (size_t r = 0; r < rows; r++) {
        row_start[r] = n;
        for (size_t k = 0; k < wpr; k++) n += sq_popcount64(mask[r * wpr + k]);
    }
    row_start[rows] = n;
}

// =============================================================================================
// Bitmask: scalar
// =============================================================================================

/// One row: the kept values v in order against x at their columns.
SQ_INLINE float bitmask_dot_scalar(const uint64_t *m, const void *v, int bf16, size_t wpr, const float *x) {
    const float *vf = (const float *)v;
    const uint16_t *vh = (const uint16_t *)v;
    float s0 = 0, s1 = 0;
    size_t i = 0;
    for (size_t k = 0; k < wpr; k++) {
        uint64_t word = m[k];
        const float *xk = x + 64 * k;
        while (word) {
            const float w = bf16 ? squeeze_bf16_to_fp32(vh[i]) : vf[i];
            s0 += w * xk[__builtin_ctzll(word)];
            i++;
            word &= word - 1;
            if (!word) break;
            const float w1 = bf16 ? squeeze_bf16_to_fp32(vh[i]) : vf[i];
            s1 += w1 * xk[__builtin_ctzll(word)];
            i++;
            word &= word - 1;
        }
    }
    return s0 + s1;
}

SQ_INLINE void bitmask_decode_scalar(const uint64_t *m, const void *v, int bf16, size_t cols, float *dst) {
    const float *vf = (const float *)v;
    const uint16_t *vh = (const uint16_t *)v;
    memset(dst, 0, cols * sizeof(float));
    size_t i = 0;
    for (size_t k = 0; k < words_per_row(cols); k++) {
        for (uint64_t word = m[k]; word; word &= word - 1, i++)
            dst[64 * k + (size_t)__builtin_ctzll(word)] = bf16 ? squeeze_bf16_to_fp32(vh[i]) : vf[i];
    }
}

#if SQ_X86
// =============================================================================================
// Bitmask: AVX-512
// =============================================================================================

/// Store the first n (<= 16) lanes.
SQ_INLINE SQ_AVX512 void store16(float *p, __m512 v, size_t n) {
    if (n >= 16) _mm512_storeu_ps(p, v);
    else _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), v);
}

/// The 16 columns of mask m16 with their packed values v: expanded to lanes (zeros elsewhere).
/// The popcount(m16) values are loaded with a mask (nothing past them is read), BF16 widened,
/// then vexpandps in registers (for F32 this measured faster than vexpandps from memory on
/// Zen 5).
SQ_INLINE SQ_AVX512 __m512 expand16(const void *v, int bf16, __mmask16 m16) {
    const __mmask16 first = (__mmask16)((1u << _mm_popcnt_u32(m16)) - 1u);
    const __m512 packed = bf16 ? sq_widen16_bf16(_mm256_maskz_loadu_epi16(first, v)) : _mm512_maskz_loadu_ps(first, v);
    return _mm512_maskz_expand_ps(m16, packed);
}

/// Software prefetch distance (bytes) for the packed values: their addresses depend on loaded
/// mask words, so the core cannot run far ahead on its own and the hardware prefetchers do not
/// keep up (without it a DRAM-resident matrix streams at ~1/4 of the read bandwidth).
#define SQ_BITMASK_PREFETCH 2048

/// One 64-column word of a row, 16 columns per accumulator; returns the number of values used.
SQ_INLINE SQ_AVX512 unsigned bitmask_word_avx512(uint64_t m, const void *v, int bf16, const float *xk, __m512 acc[4]) {
    const size_t es = bf16 ? 2 : 4;
    const char *vb = (const char *)v;
    const unsigned o1 = (unsigned)_mm_popcnt_u64(m & 0xFFFFu), o2 = (unsigned)_mm_popcnt_u64(m & 0xFFFFFFFFu);
    const unsigned o3 = (unsigned)_mm_popcnt_u64(m & 0xFFFFFFFFFFFFull);
    const __mmask16 m0 = (__mmask16)m, m1 = (__mmask16)(m >> 16), m2 = (__mmask16)(m >> 32), m3 = (__mmask16)(m >> 48);
    _mm_prefetch(vb + SQ_BITMASK_PREFETCH, _MM_HINT_T0);
    acc[0] = _mm512_fmadd_ps(expand16(vb, bf16, m0), _mm512_maskz_loadu_ps(m0, xk), acc[0]);
    acc[1] = _mm512_fmadd_ps(expand16(vb + o1 * es, bf16, m1), _mm512_maskz_loadu_ps(m1, xk + 16), acc[1]);
    acc[2] = _mm512_fmadd_ps(expand16(vb + o2 * es, bf16, m2), _mm512_maskz_loadu_ps(m2, xk + 32), acc[2]);
    acc[3] = _mm512_fmadd_ps(expand16(vb + o3 * es, bf16, m3), _mm512_maskz_loadu_ps(m3, xk + 48), acc[3]);
    return (unsigned)_mm_popcnt_u64(m);
}

SQ_INLINE SQ_AVX512 float bitmask_row_avx512(const uint64_t *mr, const void *v, int bf16, size_t wpr, const float *x) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    const char *vb = (const char *)v;
    const size_t es = bf16 ? 2 : 4;
    for (size_t k = 0; k < wpr; k++) {
        const uint64_t m = mr[k];
        if ((k & 7) == 0) _mm_prefetch((const char *)(mr + k) + SQ_BITMASK_PREFETCH / 4, _MM_HINT_T0);
        if (!m) continue;  // a whole pruned word (64 columns): per word, not per element
        vb += es * bitmask_word_avx512(m, vb, bf16, x + 64 * k, acc);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

SQ_AVX512 static void gemv_bitmask_avx512(const uint64_t *mask, const void *values, int bf16, const uint64_t *row_start,
                                          size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t wpr = words_per_row(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++)
        y[r - r0] = bitmask_row_avx512(mask + r * wpr, (const char *)values + es * row_start[r], bf16, wpr, x);
}

/// BF16 with VBMI2: 32 columns per vpexpandw expand-load (fault-suppressing: reads only the
/// popcount values), widened in two halves; on Zen 5 faster than the 16-column path above.
SQ_AVX512_VBMI2 static void gemv_bitmask_bf16_vbmi2(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                                                    size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) {
        const uint64_t *mr = mask + r * wpr;
        const uint16_t *v = values + row_start[r];
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (size_t k = 0; k < wpr; k++) {
            const uint64_t m = mr[k];
            if ((k & 7) == 0) _mm_prefetch((const char *)(mr + k) + SQ_BITMASK_PREFETCH / 4, _MM_HINT_T0);
            if (!m) continue;
            _mm_prefetch((const char *)v + SQ_BITMASK_PREFETCH, _MM_HINT_T0);
            const float *xk = x + 64 * k;
            const __mmask32 lo = (__mmask32)m, hi = (__mmask32)(m >> 32);
            const unsigned nlo = (unsigned)_mm_popcnt_u32(lo);
            const __m512i e0 = _mm512_maskz_expandloadu_epi16(lo, v);
            const __m512i e1 = _mm512_maskz_expandloadu_epi16(hi, v + nlo);
            a0 = _mm512_fmadd_ps(sq_widen16_bf16(_mm512_castsi512_si256(e0)), _mm512_maskz_loadu_ps((__mmask16)lo, xk), a0);
            a1 = _mm512_fmadd_ps(sq_widen16_bf16(_mm512_extracti64x4_epi64(e0, 1)), _mm512_maskz_loadu_ps((__mmask16)(lo >> 16), xk + 16), a1);
            a2 = _mm512_fmadd_ps(sq_widen16_bf16(_mm512_castsi512_si256(e1)), _mm512_maskz_loadu_ps((__mmask16)hi, xk + 32), a2);
            a3 = _mm512_fmadd_ps(sq_widen16_bf16(_mm512_extracti64x4_epi64(e1, 1)), _mm512_maskz_loadu_ps((__mmask16)(hi >> 16), xk + 48), a3);
            v += _mm_popcnt_u64(m);
        }
        y[r - r0] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    }
}

SQ_AVX512 static void decode_bitmask_avx512(const uint64_t *mask, const void *values, int bf16, const uint64_t *row_start,
                                            size_t cols, size_t r0, size_t r1, float *dst) {
    const size_t wpr = words_per_row(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++) {
        const uint64_t *mr = mask + r * wpr;
        const char *vb = (const char *)values + es * row_start[r];
        float *d = dst + (r - r0) * cols;
        for (size_t c = 0; c < cols; c += 16) {
            const __mmask16 m = (__mmask16)(mr[c / 64] >> (c % 64));
            store16(d + c, expand16(vb, bf16, m), cols - c);
            vb += es * (size_t)_mm_popcnt_u32(m);
        }
    }
}

SQ_AVX512_VBMI2 static void decode_bitmask_bf16_vbmi2(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                                                      size_t cols, size_t r0, size_t r1, float *dst) {
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) {
        const uint64_t *mr = mask + r * wpr;
        const uint16_t *v = values + row_start[r];
        float *d = dst + (r - r0) * cols;
        for (size_t c = 0; c < cols; c += 32) {
            const __mmask32 m = (__mmask32)(mr[c / 64] >> (c % 64));
            const __m512i e = _mm512_maskz_expandloadu_epi16(m, v);
            store16(d + c, sq_widen16_bf16(_mm512_castsi512_si256(e)), cols - c);
            if (cols - c > 16) store16(d + c + 16, sq_widen16_bf16(_mm512_extracti64x4_epi64(e, 1)), cols - c - 16);
            v += _mm_popcnt_u32(m);
        }
    }
}

// =============================================================================================
// Bitmask: AVX2
// =============================================================================================

// For a mask byte b, the vpermps indices that expand packed values to b's lanes: lane j (bit j
// set) takes value popcount(b & ((1 << j) - 1)); one byte per lane, 8 lanes in a u64 (compile-time
// table, 2 KB).
#define SQ_POP8(v) (((v) & 1) + ((v) >> 1 & 1) + ((v) >> 2 & 1) + ((v) >> 3 & 1) + \
                    ((v) >> 4 & 1) + ((v) >> 5 & 1) + ((v) >> 6 & 1) + ((v) >> 7 & 1))
#define SQ_LANE(b, j) ((uint64_t)(((b) >> (j) & 1) ? SQ_POP8((b) & ((1 << (j)) - 1)) : 0) << (8 * (j)))
#define SQ_E(b) (SQ_LANE(b, 0) | SQ_LANE(b, 1) | SQ_LANE(b, 2) | SQ_LANE(b, 3) | \
                 SQ_LANE(b, 4) | SQ_LANE(b, 5) | SQ_LANE(b, 6) | SQ_LANE(b, 7))
#define SQ_E4(b) SQ_E(b), SQ_E((b) + 1), SQ_E((b) + 2), SQ_E((b) + 3)
#define SQ_E16(b) SQ_E4(b), SQ_E4((b) + 4), SQ_E4((b) + 8), SQ_E4((b) + 12)
#define SQ_E64(b) SQ_E16(b), SQ_E16((b) + 16), SQ_E16((b) + 32), SQ_E16((b) + 48)
static const uint64_t expand_index8[256] = {SQ_E64(0), SQ_E64(64), SQ_E64(128), SQ_E64(192)};

/// Lanes of byte b set to all ones, others zero.
SQ_INLINE SQ_AVX2 __m256i lanes8(unsigned b) {
    const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)b), bits), bits);
}

/// The first n (<= 8) lanes set.
SQ_INLINE SQ_AVX2 __m256i first8(unsigned n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/// The 8 packed values of byte b at v expanded to their lanes (zeros elsewhere). Reads only
/// popcount(b) values for F32 (vmaskmovps); for BF16 it reads 8 when they lie before vend (the
/// end of the row's values), else copies the few left.
SQ_INLINE SQ_AVX2 __m256 expand8(const void *v, const void *vend, int bf16, unsigned b, __m256i lanes) {
    const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)&expand_index8[b]));
    __m256 packed;
    if (bf16) {
        const uint16_t *vh = (const uint16_t *)v;
        __m128i h;
        if (vh + 8 <= (const uint16_t *)vend) {
            h = _mm_loadu_si128((const __m128i *)vh);
        } else {
            uint16_t tmp[8] = {0};
            memcpy(tmp, vh, (size_t)((const uint16_t *)vend - vh) * sizeof(uint16_t));
            h = _mm_loadu_si128((const __m128i *)tmp);
        }
        packed = sq_widen8_bf16(h);
    } else {
        packed = _mm256_maskload_ps((const float *)v, first8((unsigned)_mm_popcnt_u32(b)));
    }
    return _mm256_and_ps(_mm256_permutevar8x32_ps(packed, idx), _mm256_castsi256_ps(lanes));
}

SQ_AVX2 static void gemv_bitmask_avx2(const uint64_t *mask, const void *values, int bf16, const uint64_t *row_start,
                                      size_t cols, size_t r0, size_t r1, const float *x, float *y) {
    const size_t wpr = words_per_row(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++) {
        const uint64_t *mr = mask + r * wpr;
        const char *vb = (const char *)values + es * row_start[r];
        const char *vend = (const char *)values + es * row_start[r + 1];
        __m256 a0 = _mm256_setzero_ps(), a1 = a0;
        for (size_t k = 0; k < wpr; k++) {
            uint64_t m = mr[k];
            if ((k & 7) == 0) _mm_prefetch((const char *)(mr + k) + SQ_BITMASK_PREFETCH / 4, _MM_HINT_T0);
            if (!m) continue;
            _mm_prefetch(vb + SQ_BITMASK_PREFETCH, _MM_HINT_T0);
            const float *xk = x + 64 * k;
            for (int q = 0; q < 8; q += 2, m >>= 16) {
                const unsigned b0 = (unsigned)(m & 0xFF), b1 = (unsigned)(m >> 8 & 0xFF);
                const __m256i l0 = lanes8(b0), l1 = lanes8(b1);
                const char *vb1 = vb + es * (size_t)_mm_popcnt_u32(b0);
                a0 = _mm256_fmadd_ps(expand8(vb, vend, bf16, b0, l0), _mm256_maskload_ps(xk + 8 * q, l0), a0);
                a1 = _mm256_fmadd_ps(expand8(vb1, vend, bf16, b1, l1), _mm256_maskload_ps(xk + 8 * q + 8, l1), a1);
                vb = vb1 + es * (size_t)_mm_popcnt_u32(b1);
            }
        }
        __m256 a = _mm256_add_ps(a0, a1);
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        s = _mm_add_ss(s, _mm_movehdup_ps(s));
        y[r - r0] = _mm_cvtss_f32(s);
    }
}

SQ_AVX2 static void decode_bitmask_avx2(const uint64_t *mask, const void *values, int bf16, const uint64_t *row_start,
                                        size_t cols, size_t r0, size_t r1, float *dst) {
    const size_t wpr = words_per_row(cols), es = bf16 ? 2 : 4;
    for (size_t r = r0; r < r1; r++) {
        const uint64_t *mr = mask + r * wpr;
        const char *vb = (const char *)values + es * row_start[r];
        const char *vend = (const char *)values + es * row_start[r + 1];
        float *d = dst + (r - r0) * cols;
        for (size_t c = 0; c < cols; c += 8) {
            const unsigned b = (unsigned)(mr[c / 64] >> (c % 64) & 0xFF);
            const __m256 e = expand8(vb, vend, bf16, b, lanes8(b));
            if (cols - c >= 8) _mm256_storeu_ps(d + c, e);
            else _mm256_maskstore_ps(d + c, first8((unsigned)(cols - c)), e);
            vb += es * (size_t)_mm_popcnt_u32(b);
        }
    }
}
#endif

// =============================================================================================
// Bitmask: dispatch
// =============================================================================================

void squeeze_gemv_bitmask_f32(const uint64_t *mask, const float *values, const uint64_t *row_start,
                              size_t cols, size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { gemv_bitmask_avx512(mask, values, 0, row_start, cols, r0, r1, x, y); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_bitmask_avx2(mask, values, 0, row_start, cols, r0, r1, x, y); return; }
#endif
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) y[r - r0] = bitmask_dot_scalar(mask + r * wpr, values + row_start[r], 0, wpr, x);
}

void squeeze_gemv_bitmask_bf16(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                               size_t cols, size_t r0, size_t r1, const float *x, float *y) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) {
        if (squeeze_internal_vbmi2()) gemv_bitmask_bf16_vbmi2(mask, values, row_start, cols, r0, r1, x, y);
        else gemv_bitmask_avx512(mask, values, 1, row_start, cols, r0, r1, x, y);
        return;
    }
    if (isa >= SQUEEZE_ISA_AVX2) { gemv_bitmask_avx2(mask, values, 1, row_start, cols, r0, r1, x, y); return; }
#endif
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) y[r - r0] = bitmask_dot_scalar(mask + r * wpr, values + row_start[r], 1, wpr, x);
}

void squeeze_decode_rows_bitmask_f32(const uint64_t *mask, const float *values, const uint64_t *row_start,
                                     size_t cols, size_t r0, size_t r1, float *dst) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { decode_bitmask_avx512(mask, values, 0, row_start, cols, r0, r1, dst); return; }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_bitmask_avx2(mask, values, 0, row_start, cols, r0, r1, dst); return; }
#endif
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) bitmask_decode_scalar(mask + r * wpr, values + row_start[r], 0, cols, dst + (r - r0) * cols);
}

void squeeze_decode_rows_bitmask_bf16(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                                      size_t cols, size_t r0, size_t r1, float *dst) {
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) {
        if (squeeze_internal_vbmi2()) decode_bitmask_bf16_vbmi2(mask, values, row_start, cols, r0, r1, dst);
        else decode_bitmask_avx512(mask, values, 1, row_start, cols, r0, r1, dst);
        return;
    }
    if (isa >= SQUEEZE_ISA_AVX2) { decode_bitmask_avx2(mask, values, 1, row_start, cols, r0, r1, dst); return; }
#endif
    const size_t wpr = words_per_row(cols);
    for (size_t r = r0; r < r1; r++) bitmask_decode_scalar(mask + r * wpr, values + row_start[r], 1, cols, dst + (r - r0) * cols);
}
