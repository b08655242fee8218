// Shared by the CKernels sources (not exported): target attributes for the vector paths, the
// dispatch flags, small helpers. The files are compiled for baseline x86-64 (or any other
// architecture); only functions marked SQ_AVX2 / SQ_AVX512 use wider instructions, and only
// when squeeze_isa() says the CPU and OS support them.
#ifndef SQUEEZE_KERNELS_INTERNAL_H
#define SQUEEZE_KERNELS_INTERNAL_H

#include "squeeze_kernels.h"

// SQUEEZE_NO_SIMD (a compile-time define) builds the scalar paths only, as on non-x86 machines.
#if defined(__x86_64__) && !defined(SQUEEZE_NO_SIMD)
#define SQ_X86 1
#include <immintrin.h>
/// AVX2 level: Haswell and later (also every AVX-512 CPU).
#define SQ_AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2,popcnt")))
/// AVX-512 level: Skylake-SP / Zen 4 and later.
#define SQ_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi,bmi2,popcnt")))
/// AVX-512 plus VBMI2 (vpexpandw), Ice Lake / Zen 4 and later.
#define SQ_AVX512_VBMI2 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi2,avx2,fma,f16c,bmi,bmi2,popcnt")))
#else
#define SQ_X86 0
#endif

#if SQ_X86
/// 16 BF16 -> 16 F32, exact (a BF16 is the top half of an F32).
static inline __attribute__((always_inline)) SQ_AVX512 __m512 sq_widen16_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
/// 8 BF16 -> 8 F32, exact.
static inline __attribute__((always_inline)) SQ_AVX2 __m256 sq_widen8_bf16(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

/// Whether the VBMI2 kernels may run (detected, usable and not disabled by squeeze_set_use_vbmi2).
int squeeze_internal_vbmi2(void);

/// Population count of a 64-bit word (portable; the vector paths use _mm_popcnt_u64).
static inline unsigned sq_popcount64(uint64_t m) { return (unsigned)__builtin_popcountll(m); }

#endif
