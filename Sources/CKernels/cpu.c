// Run-time CPU dispatch: which vector level the kernels use.
//
//   detected  cpuid feature bits AND the OS saving the register state (xgetbv), once;
//   env       SQUEEZE_ISA=generic|avx2|avx512 caps it (read once; an unknown value is ignored);
//   cap       squeeze_set_isa(level) caps it further (tests); -1 removes the cap.
//
// All state is in atomics: the first callers may race to initialise, but they compute the same
// values, so whoever stores last stores the same thing.
#include "internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if SQ_X86
#include <cpuid.h>
#endif

/// Bits of `features`.
enum {
    F_AVX2_LEVEL = 1 << 0,  // avx2 + fma + f16c + OS ymm state
    F_AVX512_LEVEL = 1 << 1,  // avx512f + bw + vl + dq + OS zmm/opmask state (and the AVX2 level)
    F_BF16 = 1 << 2,
    F_VNNI = 1 << 3,
    F_VBMI2 = 1 << 4,
    F_DONE = 1 << 30,
};

static _Atomic int features = 0;       // F_DONE once detected
static _Atomic int env_level = -1;     // detected level capped by SQUEEZE_ISA; -1 until initialised
static _Atomic int cap_level = -1;     // squeeze_set_isa; -1 = no cap
static _Atomic int vbmi2_enabled = 1;  // squeeze_set_use_vbmi2

#if SQ_X86
/// XCR0 (the register state the OS saves on context switches). Only valid when OSXSAVE is set.
static uint64_t read_xcr0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static int detect(void) {
    int f = F_DONE;
#if SQ_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx) return f;
    const uint64_t xcr0 = read_xcr0();
    const int os_ymm = (xcr0 & 0x6) == 0x6;      // SSE + AVX state
    const int os_zmm = (xcr0 & 0xE6) == 0xE6;    // + opmask, ZMM_Hi256, Hi16_ZMM
    unsigned max_leaf = __get_cpuid_max(0, NULL);
    if (max_leaf < 7) return f;
    unsigned b7 = 0, c7 = 0, a71 = 0;
    __cpuid_count(7, 0, a, b7, c7, d);
    const unsigned subleaves = a;
    if (subleaves >= 1) {
        __cpuid_count(7, 1, a71, b, c, d);
    }
    const int avx2 = (b7 >> 5) & 1;
    const int avx512f = (b7 >> 16) & 1, avx512dq = (b7 >> 17) & 1;
    const int avx512bw = (b7 >> 30) & 1, avx512vl = (b7 >> 31) & 1;
    if (avx2 && fma && f16c && os_ymm) f |= F_AVX2_LEVEL;
    if ((f & F_AVX2_LEVEL) && avx512f && avx512dq && avx512bw && avx512vl && os_zmm) f |= F_AVX512_LEVEL;
    if (avx512f && os_zmm) {
        if ((a71 >> 5) & 1) f |= F_BF16;
        if ((c7 >> 11) & 1) f |= F_VNNI;
        if ((c7 >> 6) & 1) f |= F_VBMI2;
    }
#endif
    return f;
}

static int get_features(void) {
    int f = atomic_load_explicit(&features, memory_order_acquire);
    if (!(f & F_DONE)) {
        f = detect();
        atomic_store_explicit(&features, f, memory_order_release);
    }
    return f;
}

/// The detected level capped by SQUEEZE_ISA.
static int base_level(void) {
    int level = atomic_load_explicit(&env_level, memory_order_acquire);
    if (level >= 0) return level;
    const int f = get_features();
    level = (f & F_AVX512_LEVEL) ? SQUEEZE_ISA_AVX512 : (f & F_AVX2_LEVEL) ? SQUEEZE_ISA_AVX2 : SQUEEZE_ISA_GENERIC;
    const char *env = getenv("SQUEEZE_ISA");
    if (env) {
        int want = -1;
        if (strcmp(env, "generic") == 0) want = SQUEEZE_ISA_GENERIC;
        else if (strcmp(env, "avx2") == 0) want = SQUEEZE_ISA_AVX2;
        else if (strcmp(env, "avx512") == 0) want = SQUEEZE_ISA_AVX512;
        if (want >= 0 && want < level) level = want;
    }
    atomic_store_explicit(&env_level, level, memory_order_release);
    return level;
}

int squeeze_isa(void) {
    const int level = base_level();
    const int cap = atomic_load_explicit(&cap_level, memory_order_relaxed);
    return (cap >= 0 && cap < level) ? cap : level;
}

void squeeze_set_isa(int level) {
    (void)base_level();
    atomic_store_explicit(&cap_level, level < 0 ? -1 : level, memory_order_relaxed);
}

const char *squeeze_isa_name(int level) {
    switch (level) {
    case SQUEEZE_ISA_GENERIC: return "generic";
    case SQUEEZE_ISA_AVX2: return "avx2";
    case SQUEEZE_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

int squeeze_cpu_has_avx512_bf16(void) { return (get_features() & F_BF16) != 0; }
int squeeze_cpu_has_avx512_vnni(void) { return (get_features() & F_VNNI) != 0; }
int squeeze_cpu_has_avx512_vbmi2(void) { return (get_features() & F_VBMI2) != 0; }

void squeeze_set_use_vbmi2(int on) { atomic_store_explicit(&vbmi2_enabled, on != 0, memory_order_relaxed); }

int squeeze_internal_vbmi2(void) {
    return (get_features() & F_VBMI2) && atomic_load_explicit(&vbmi2_enabled, memory_order_relaxed);
}

int squeeze_use_vbmi2(void) { return squeeze_internal_vbmi2(); }
