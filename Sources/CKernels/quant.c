// ggml's Q8_0 and Q4_0 blocks: quantize (ggml's reference rule, bit for bit) and dequantize.
//
//   Q8_0: d = amax / 127, id = d ? 1/d : 0, q[j] = roundf(x[j] * id)           (int8)
//   Q4_0: max = the first x[j] of largest |x[j]|, d = max / -8, id = d ? 1/d : 0,
//         q[j] = min(15, (int8_t)(x[j] * id + 8.5f)), stored j | (j + 16) << 4   (w = d (q - 8))
//
// d is stored as fp16 (RNE); id comes from the F32 d. Every step is one IEEE F32 operation, so
// the results do not depend on the compiler as long as nothing is contracted into an FMA (hence
// the pragma; the target's flags do not enable FMA anyway, but the pragma keeps it that way).
// These are the cold paths (done once per model): scalar only.
#pragma STDC FP_CONTRACT OFF
#include "internal.h"

#include <math.h>

int squeeze_q8_0_code(float w, float id) {
    const float r = roundf(w * id);
    if (!(r == r)) return 0;  // NaN
    if (r >= 127.0f) return 127;
    if (r <= -128.0f) return -128;
    return (int)r;
}

int squeeze_q4_0_code(float w, float id) {
    const float t = w * id + 8.5f;
    if (!(t == t)) return 8;  // NaN: the zero weight
    if (t < 0.0f) return 0;   // (ggml's (int8_t) conversion is only defined from -1 up)
    if (t >= 15.0f) return 15;
    return (int)t;            // truncation, as (int8_t)
}

float squeeze_q8_0_scale(const float *x32) {
    float amax = 0.0f;
    for (int j = 0; j < SQUEEZE_QK; j++) {
        const float a = fabsf(x32[j]);
        amax = amax > a ? amax : a;  // ggml's MAX(amax, fabsf(v))
    }
    return amax / 127.0f;
}

float squeeze_q4_0_scale(const float *x32) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < SQUEEZE_QK; j++) {
        const float v = x32[j];
        if (amax < fabsf(v)) {  // strict: the first value of largest magnitude wins
            amax = fabsf(v);
            max = v;
        }
    }
    return max / -8.0f;
}

/// x [n] -> y [n / 32].
void squeeze_quantize_q8_0(const float *x, squeeze_block_q8_0 *y, size_t n) {
    for (size_t b = 0; b < n / SQUEEZE_QK; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        const float d = squeeze_q8_0_scale(xb);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = squeeze_fp32_to_fp16(d);
        for (int j = 0; j < SQUEEZE_QK; j++) y[b].qs[j] = (int8_t)squeeze_q8_0_code(xb[j], id);
    }
}

/// x [n] -> y [n / 32].
void squeeze_quantize_q4_0(const float *x, squeeze_block_q4_0 *y, size_t n) {
    for (size_t b = 0; b < n / SQUEEZE_QK; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        const float d = squeeze_q4_0_scale(xb);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = squeeze_fp32_to_fp16(d);
        for (int j = 0; j < SQUEEZE_QK / 2; j++) {
            const int lo = squeeze_q4_0_code(xb[j], id), hi = squeeze_q4_0_code(xb[j + SQUEEZE_QK / 2], id);
            y[b].qs[j] = (uint8_t)(lo | hi << 4);
        }
    }
}

/// Activations for the quantized GEMVs: the Q8_0 rule with the F32 scale kept. A block holding a
/// NaN or an infinity gets scale NaN and zero codes, so the products it enters are NaN (as F32
/// activations would make them), not silently finite.
void squeeze_quantize_activations(const float *x, int8_t *codes, float *scales, size_t n) {
    for (size_t b = 0; b < n / SQUEEZE_QK; b++) {
        const float *xb = x + b * SQUEEZE_QK;
        int finite = 1;
        for (int j = 0; j < SQUEEZE_QK; j++) finite &= isfinite(xb[j]) != 0;
        const float d = finite ? squeeze_q8_0_scale(xb) : NAN;
        const float id = finite && d != 0.0f ? 1.0f / d : 0.0f;
        scales[b] = d;
        for (int j = 0; j < SQUEEZE_QK; j++) codes[b * SQUEEZE_QK + j] = (int8_t)squeeze_q8_0_code(xb[j], id);
    }
}

/// x [n / 32] -> y [n]: one F32 multiply per weight, d * q (as gguf-py: x * d in F32).
void squeeze_dequantize_q8_0(const squeeze_block_q8_0 *x, float *y, size_t n) {
    squeeze_decode_rows_q8_0(x, n, 0, 1, y);
}

void squeeze_dequantize_q4_0(const squeeze_block_q4_0 *x, float *y, size_t n) {
    squeeze_decode_rows_q4_0(x, n, 0, 1, y);
}
