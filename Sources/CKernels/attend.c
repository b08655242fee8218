// Attention of one query row over a BF16 key/value cache (generation's decode step): the keys
// and values stay BF16 in memory and are widened in registers, never converted as whole rows.
//
//   scores[j] = scale · q · K_j        (j < n, K_j the BF16 row at k + j·stride)
//   out       = Σ_j softmax(scores)_j · V_j
//
// Dispatched like the gemv kernels (squeeze_isa()); F32 accumulation on every path.
#include "internal.h"

#include <math.h>

// ---- generic -----------------------------------------------------------------------------------

static float dot_bf16_generic(const float *q, const uint16_t *k, size_t hs) {
    float s = 0;
    for (size_t d = 0; d < hs; d++) s += q[d] * squeeze_bf16_to_fp32(k[d]);
    return s;
}

static void axpy_bf16_generic(float p, const uint16_t *v, float *out, size_t hs) {
    for (size_t d = 0; d < hs; d++) out[d] += p * squeeze_bf16_to_fp32(v[d]);
}

#if SQ_X86
// ---- AVX2 --------------------------------------------------------------------------------------

SQ_AVX2 static float dot_bf16_avx2(const float *q, const uint16_t *k, size_t hs) {
    __m256 acc = _mm256_setzero_ps();
    size_t d = 0;
    for (; d + 8 <= hs; d += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), sq_widen8_bf16(_mm_loadu_si128((const __m128i *)(k + d))), acc);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    float s = _mm_cvtss_f32(s4);
    for (; d < hs; d++) s += q[d] * squeeze_bf16_to_fp32(k[d]);
    return s;
}

SQ_AVX2 static void axpy_bf16_avx2(float p, const uint16_t *v, float *out, size_t hs) {
    const __m256 pv = _mm256_set1_ps(p);
    size_t d = 0;
    for (; d + 8 <= hs; d += 8)
        _mm256_storeu_ps(out + d, _mm256_fmadd_ps(pv, sq_widen8_bf16(_mm_loadu_si128((const __m128i *)(v + d))), _mm256_loadu_ps(out + d)));
    for (; d < hs; d++) out[d] += p * squeeze_bf16_to_fp32(v[d]);
}

// ---- AVX-512 -----------------------------------------------------------------------------------

SQ_AVX512 static float dot_bf16_avx512(const float *q, const uint16_t *k, size_t hs) {
    __m512 acc = _mm512_setzero_ps();
    size_t d = 0;
    for (; d + 16 <= hs; d += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + d), sq_widen16_bf16(_mm256_loadu_si256((const __m256i *)(k + d))), acc);
    if (d < hs) {
        const __mmask16 m = (__mmask16)((1u << (hs - d)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + d), sq_widen16_bf16(_mm256_maskz_loadu_epi16(m, k + d)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

SQ_AVX512 static void axpy_bf16_avx512(float p, const uint16_t *v, float *out, size_t hs) {
    const __m512 pv = _mm512_set1_ps(p);
    size_t d = 0;
    for (; d + 16 <= hs; d += 16)
        _mm512_storeu_ps(out + d, _mm512_fmadd_ps(pv, sq_widen16_bf16(_mm256_loadu_si256((const __m256i *)(v + d))), _mm512_loadu_ps(out + d)));
    if (d < hs) {
        const __mmask16 m = (__mmask16)((1u << (hs - d)) - 1);
        const __m512 o = _mm512_maskz_loadu_ps(m, out + d);
        _mm512_mask_storeu_ps(out + d, m, _mm512_fmadd_ps(pv, sq_widen16_bf16(_mm256_maskz_loadu_epi16(m, v + d)), o));
    }
}
#endif

// One head's slice of a cached row is hs BF16 values a whole row (all heads) apart from the next
// position's: a short read per row, at a stride the hardware prefetchers did not follow (the
// attention of a 640-token decode measured 1.6 GB/s, 94% of its time waiting on those loads), so
// the rows PREFETCH_AHEAD positions ahead are prefetched.
enum { PREFETCH_AHEAD = 16 };

static inline void prefetch_row(const uint16_t *p, size_t hs) {
    for (size_t b = 0; b < hs * sizeof(uint16_t); b += 64) __builtin_prefetch((const char *)p + b, 0, 3);
}

void squeeze_attend_bf16(const float *q, const uint16_t *k, const uint16_t *v, size_t stride, size_t n, size_t hs,
                         float scale, float *scores, float *out) {
    float (*dot)(const float *, const uint16_t *, size_t) = dot_bf16_generic;
    void (*axpy)(float, const uint16_t *, float *, size_t) = axpy_bf16_generic;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { dot = dot_bf16_avx512; axpy = axpy_bf16_avx512; }
    else if (isa >= SQUEEZE_ISA_AVX2) { dot = dot_bf16_avx2; axpy = axpy_bf16_avx2; }
#endif
    for (size_t d = 0; d < hs; d++) out[d] = 0;
    if (n == 0) return;
    float mx = -INFINITY;
    for (size_t j = 0; j < n; j++) {
        if (j + PREFETCH_AHEAD < n) prefetch_row(k + (j + PREFETCH_AHEAD) * stride, hs);
        scores[j] = scale * dot(q, k + j * stride, hs);
        if (scores[j] > mx) mx = scores[j];
    }
    float sum = 0;
    for (size_t j = 0; j < n; j++) {
        if (j + PREFETCH_AHEAD < n) prefetch_row(v + (j + PREFETCH_AHEAD) * stride, hs);
        const float p = expf(scores[j] - mx);
        sum += p;
        axpy(p, v + j * stride, out, hs);
    }
    const float inv = 1 / sum;
    for (size_t d = 0; d < hs; d++) out[d] *= inv;
}
