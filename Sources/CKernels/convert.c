// Float conversions, bit exact on every path: F32 <-> FP16 (IEEE binary16) and F32 <-> BF16.
//
// FP16 follows F16C (vcvtps2ph with round-to-nearest-even / vcvtph2ps), which is what ggml's
// GGML_FP32_TO_FP16 / GGML_FP16_TO_FP32 give on x86: RNE, overflow to inf, subnormals kept,
// NaNs made quiet with their sign and top payload bits. The scalar code below is the reference;
// the quantized kernels use the F16C instructions, which agree with it on every input.
//
// BF16 follows PyTorch's c10::BFloat16: RNE by integer rounding of the F32 bits (also for F32
// subnormals, which AVX512-BF16's vcvtneps2bf16 would flush, so that instruction is not used),
// any NaN -> 0x7FC0.
#pragma STDC FP_CONTRACT OFF
#include "internal.h"

static inline uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t squeeze_fp32_to_fp16(float x) {
    const uint32_t u = f32_bits(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((a >> 13) & 0x3FFu));  // NaN -> quiet
    if (a >= 0x47800000u) return (uint16_t)(sign | 0x7C00u);  // >= 65536 (and inf): inf
    if (a >= 0x38800000u) {
        // Normal half: rebias the exponent (127 -> 15), drop 13 mantissa bits with RNE. A carry
        // out of the mantissa bumps the exponent, up to 0x7C00 (inf) from [65520, 65536).
        uint32_t h = (a - 0x38000000u) >> 13;
        const uint32_t rem = a & 0x1FFFu;
        h += (rem > 0x1000u) || (rem == 0x1000u && (h & 1u));
        return (uint16_t)(sign | h);
    }
    if (a < 0x33000000u) return sign;  // < 2^-25: rounds to (signed) zero
    // Subnormal half, units of 2^-24: the 24-bit significand shifted right by s in [14, 24], RNE.
    // Rounding up from the largest subnormal gives 0x0400, the smallest normal: still right.
    const uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;
    const uint32_t s = 126u - e;
    uint32_t h = m >> s;
    const uint32_t rem = m & ((1u << s) - 1u), half = 1u << (s - 1u);
    h += (rem > half) || (rem == half && (h & 1u));
    return (uint16_t)(sign | h);
}

float squeeze_fp16_to_fp32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1F) return bits_f32(sign | 0x7F800000u | (m << 13) | (m ? 0x400000u : 0u));  // inf / quiet NaN
    if (e == 0) {
        // Zero or subnormal: m * 2^-24, exact in F32.
        const float v = (float)m * 0x1p-24f;
        return bits_f32(sign | f32_bits(v));
    }
    return bits_f32(sign | ((e + 112u) << 23) | (m << 13));
}

uint16_t squeeze_fp32_to_bf16(float x) {
    const uint32_t u = f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// ---------------------------------------------------------------------------------------------
// Arrays: x [n] -> y [n]
// ---------------------------------------------------------------------------------------------

#if SQ_X86
SQ_AVX512 static void f32_to_bf16_avx512(const float *x, uint16_t *y, size_t n) {
    const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
    const __m512i absmask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i qnan = _mm512_set1_epi32(0x7FC0);
    size_t i = 0;
    for (; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m512i u = _mm512_maskz_loadu_epi32(k, x + i);
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(u, 16), one)));
        r = _mm512_srli_epi32(r, 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, absmask), inf);
        r = _mm512_mask_mov_epi32(r, nan, qnan);
        _mm256_mask_storeu_epi16(y + i, k, _mm512_cvtepi32_epi16(r));
    }
}

SQ_AVX512 static void bf16_to_f32_avx512(const uint16_t *x, float *y, size_t n) {
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1u);
        const __m256i h = _mm256_maskz_loadu_epi16(k, x + i);
        _mm512_mask_storeu_ps(y + i, k, sq_widen16_bf16(h));
    }
}

SQ_AVX2 static size_t f32_to_bf16_avx2(const float *x, uint16_t *y, size_t n) {
    const __m256i bias = _mm256_set1_epi32(0x7FFF), one = _mm256_set1_epi32(1);
    const __m256i absmask = _mm256_set1_epi32(0x7FFFFFFF), inf = _mm256_set1_epi32(0x7F800000);
    const __m256i qnan = _mm256_set1_epi32(0x7FC0);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(_mm256_srli_epi32(u, 16), one)));
        r = _mm256_srli_epi32(r, 16);
        // Signed compare is right here: |u| and inf are both below 2^31.
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
        r = _mm256_blendv_epi8(r, qnan, nan);
        // 8 x u32 (each <= 0xFFFF) -> 8 x u16: pack within 128-bit lanes, then gather the halves.
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
        _mm_storeu_si128((__m128i *)(y + i), _mm256_castsi256_si128(p));
    }
    return i;
}

SQ_AVX2 static size_t f16_to_f32_avx2(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))));
    return i;
}

SQ_AVX2 static size_t bf16_to_f32_avx2(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(x + i));
        _mm256_storeu_ps(y + i, sq_widen8_bf16(h));
    }
    return i;
}
#endif

void squeeze_f32_to_bf16_n(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { f32_to_bf16_avx512(x, y, n); return; }
    if (isa >= SQUEEZE_ISA_AVX2) i = f32_to_bf16_avx2(x, y, n);
#endif
    for (; i < n; i++) y[i] = squeeze_fp32_to_bf16(x[i]);
}

void squeeze_bf16_to_f32_n(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
#if SQ_X86
    const int isa = squeeze_isa();
    if (isa >= SQUEEZE_ISA_AVX512) { bf16_to_f32_avx512(x, y, n); return; }
    if (isa >= SQUEEZE_ISA_AVX2) i = bf16_to_f32_avx2(x, y, n);
#endif
    for (; i < n; i++) y[i] = squeeze_bf16_to_fp32(x[i]);
}

void squeeze_f16_to_f32_n(const uint16_t *x, float *y, size_t n) {
    size_t i = 0;
#if SQ_X86
    if (squeeze_isa() >= SQUEEZE_ISA_AVX2) i = f16_to_f32_avx2(x, y, n);   // vcvtph2ps: what the scalar rule gives
#endif
    for (; i < n; i++) y[i] = squeeze_fp16_to_fp32(x[i]);
}
