// CPU kernels for packed weight forms: BF16, ggml's Q8_0 / Q4_0 blocks, unstructured sparse
// (bitmask + packed values) and 2:4 sparse, for batch-1 decode (GEMV) and prefill (decode rows
// to dense F32, then one sgemm per panel). Plain C; every exported symbol is `squeeze_`-prefixed.
//
// Layout: every matrix is row-major with "rows" the OUTPUTS and "cols" the INPUTS, i.e. ggml's
// and GGUF's W[out, in]: y[r] = dot(W row r, x). The one exception is squeeze_gemv_f32_io (HF's
// [in, out] layout). All sizes are size_t. Every gemv OVERWRITES y; rows [r0, r1) let callers
// split a matrix over threads (each thread passes its own range and its own y).
//
// Run-time CPU dispatch: ONE binary runs on any x86-64. Each gemv/decode function picks an
// AVX-512 (F+BW+VL+DQ; VBMI2 where present), an AVX2 (+FMA+F16C) or a portable scalar
// implementation from squeeze_isa(). Non-x86 builds compile the scalar paths only.
//
//   SQUEEZE_ISA=generic|avx2|avx512   (environment, read once at the first call)
//       caps the level in use below the detected one (never raises it); an unknown value is
//       ignored. scripts/test.sh runs PackedKernelTests again under avx2 and generic, so the
//       fallbacks are tested on every machine.
//
// Numerics: accumulation is in F32; summation order differs between the paths (so gemv results
// may differ in the last bits between levels). Conversions, quantizers, dequantizers and every
// decode_rows function are EXACT: bitwise identical on every path.
#ifndef SQUEEZE_KERNELS_H
#define SQUEEZE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// CPU dispatch (cpu.c)
// ---------------------------------------------------------------------------------------------

enum { SQUEEZE_ISA_GENERIC = 0, SQUEEZE_ISA_AVX2 = 1, SQUEEZE_ISA_AVX512 = 2 };

/// The level in use: detected (cpuid + xgetbv: AVX2 needs avx2+fma+f16c and the OS saving ymm
/// state; AVX512 needs that plus avx512f+bw+vl+dq and the OS saving zmm/opmask state), capped by
/// SQUEEZE_ISA and by squeeze_set_isa. Thread-safe lazy initialisation.
int squeeze_isa(void);
/// Tests: caps the level at `level` (never above the detected/env level); -1 restores it.
void squeeze_set_isa(int level);
/// "generic", "avx2", "avx512" (or "unknown").
const char *squeeze_isa_name(int level);
/// Raw detection for reports (cpuid bit and the OS saving zmm state), whatever the level in use.
int squeeze_cpu_has_avx512_bf16(void);
int squeeze_cpu_has_avx512_vnni(void);
int squeeze_cpu_has_avx512_vbmi2(void);
/// Tests (addition to the brief's API): 0 makes the AVX-512 bitmask-BF16 kernels take their
/// AVX-512F/BW path (masked load + widen + vexpandps) even on a VBMI2 CPU; 1 (the default) uses
/// VBMI2's vpexpandw expand-load where detected.
void squeeze_set_use_vbmi2(int on);
/// Whether the AVX-512 kernels currently use VBMI2 (detected and not disabled).
int squeeze_use_vbmi2(void);

// ---------------------------------------------------------------------------------------------
// Conversions (convert.c), bit exact
// ---------------------------------------------------------------------------------------------

/// IEEE binary16, round to nearest even, overflow -> inf, subnormals kept. NaN -> quiet NaN with
/// the sign and the top payload bits (what F16C's vcvtps2ph and so ggml's GGML_FP32_TO_FP16 on x86
/// give).
uint16_t squeeze_fp32_to_fp16(float x);
/// Exact; a signalling NaN comes back quiet (as vcvtph2ps), payload kept.
float squeeze_fp16_to_fp32(uint16_t h);
/// BF16, round to nearest even (also for subnormals); any NaN -> 0x7FC0 (PyTorch's scalar
/// c10::BFloat16 rule).
uint16_t squeeze_fp32_to_bf16(float x);
static inline float squeeze_bf16_to_fp32(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
/// x [n] -> y [n], element by element as the scalar functions above.
void squeeze_f32_to_bf16_n(const float *x, uint16_t *y, size_t n);
void squeeze_bf16_to_f32_n(const uint16_t *x, float *y, size_t n);
void squeeze_f16_to_f32_n(const uint16_t *x, float *y, size_t n);

// ---------------------------------------------------------------------------------------------
// ggml blocks (quant.c): 32 consecutive weights along the input dimension of one output
// ---------------------------------------------------------------------------------------------

#define SQUEEZE_QK 32

/// 34 bytes: w[j] = fp16(d) * qs[j].
typedef struct {
    uint16_t d;
    int8_t qs[SQUEEZE_QK];
} squeeze_block_q8_0;

/// 18 bytes: w[j] = fp16(d) * (q[j] - 8); byte j holds q[j] (low nibble) and q[j + 16] (high).
typedef struct {
    uint16_t d;
    uint8_t qs[SQUEEZE_QK / 2];
} squeeze_block_q4_0;

_Static_assert(sizeof(squeeze_block_q8_0) == 34, "block_q8_0 is 34 bytes");
_Static_assert(sizeof(squeeze_block_q4_0) == 18, "block_q4_0 is 18 bytes");

/// x [n] -> y [n / 32], n % 32 == 0: bit for bit ggml's quantize_row_q8_0_ref / _q4_0_ref (and
/// gguf-py's quants.quantize) for finite inputs whose inverse scale is finite.
void squeeze_quantize_q8_0(const float *x, squeeze_block_q8_0 *y, size_t n);
void squeeze_quantize_q4_0(const float *x, squeeze_block_q4_0 *y, size_t n);
/// x [n / 32] -> y [n]: w = fp16_to_fp32(d) * q in F32 (as gguf-py's dequantize).
void squeeze_dequantize_q8_0(const squeeze_block_q8_0 *x, float *y, size_t n);
void squeeze_dequantize_q4_0(const squeeze_block_q4_0 *x, float *y, size_t n);

/// One weight with a GIVEN inverse scale id (GPTQ fixes a block's scale, then quantizes column by
/// column): ggml's rule, roundf(w * id) for Q8_0 (half away from zero) and
/// min(15, (int8_t)(w * id + 8.5f)) for Q4_0 (the stored code, 0..15, q - 8 the multiplier).
/// Beyond ggml's range (where its rule is undefined) the codes saturate: Q8_0 to [-128, 127],
/// Q4_0 to [0, 15]; NaN gives 0 (Q8_0) or 8 (Q4_0).
int squeeze_q8_0_code(float w, float id);
int squeeze_q4_0_code(float w, float id);
/// The scale d (F32, before fp16 rounding) ggml's rule gives the block x32 [32]: amax / 127 for
/// Q8_0; for Q4_0, max / -8 with max the first value of largest magnitude. The inverse scale the
/// quantizers then use is id = d ? 1 / d : 0 (from this F32 d, not from the fp16-rounded one).
float squeeze_q8_0_scale(const float *x32);
float squeeze_q4_0_scale(const float *x32);
/// Activations for the quantized GEMVs, x [n] (n % 32 == 0) -> codes [n], scales [n / 32]: per
/// block of 32 the Q8_0 rule (d = squeeze_q8_0_scale, codes squeeze_q8_0_code(x, 1 / d)) with d
/// kept in F32; a block with a NaN or an infinity gets d = NaN and zero codes (quant.c).
void squeeze_quantize_activations(const float *x, int8_t *codes, float *scales, size_t n);

// ---------------------------------------------------------------------------------------------
// Decode (batch-1 GEMV): rows [r0, r1), y[r - r0] = sum_c W[r, c] * x[c] (y OVERWRITTEN)
// x [cols], y [r1 - r0]
// ---------------------------------------------------------------------------------------------

/// W [rows, cols] F32 (gemv_dense.c).
void squeeze_gemv_f32(const float *W, size_t cols, size_t r0, size_t r1, const float *x, float *y);
/// W [rows, cols] BF16, widened in registers, F32 FMA (gemv_dense.c).
void squeeze_gemv_bf16(const uint16_t *W, size_t cols, size_t r0, size_t r1, const float *x, float *y);
/// F16 (IEEE binary16) weights, as GGUF's F16 files keep them: widened exactly, F32 products.
void squeeze_gemv_f16(const uint16_t *W, size_t cols, size_t r0, size_t r1, const float *x, float *y);
/// W [rows, cols / 32] blocks against activations quantized by squeeze_quantize_activations
/// (xq [cols] codes, xd [cols / 32] scales): integer products per block, F32 scaling (gemv_quant.c).
void squeeze_gemv_q8_0(const squeeze_block_q8_0 *W, size_t cols, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y);
void squeeze_gemv_q4_0(const squeeze_block_q4_0 *W, size_t cols, size_t r0, size_t r1, const int8_t *xq, const float *xd, float *y);
/// HF layout W [in, out]: y[c - c0] = sum_i x[i] W[i, c] for output columns [c0, c1); streams
/// the rows of W (gemv_dense.c). x [in], y [c1 - c0].
void squeeze_gemv_f32_io(const float *W, size_t in, size_t out, size_t c0, size_t c1, const float *x, float *y);

// Unstructured sparse (gemv_sparse.c): a bitmask and the kept values.
//   mask [rows, wpr] uint64, wpr = (cols + 63) / 64: bit j of word k of row r <-> W[r, 64k + j]
//        kept; bits past cols are 0.
//   values: the kept values in row-major order; row_start [rows + 1]: index of row r's first
//        value (row_start[rows] = the number of values), from squeeze_bitmask_row_starts.
void squeeze_bitmask_row_starts(const uint64_t *mask, size_t rows, size_t cols, uint64_t *row_start);
void squeeze_gemv_bitmask_f32(const uint64_t *mask, const float *values, const uint64_t *row_start,
                              size_t cols, size_t r0, size_t r1, const float *x, float *y);
void squeeze_gemv_bitmask_bf16(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                               size_t cols, size_t r0, size_t r1, const float *x, float *y);

// 2:4 sparse (gemv_sparse.c), cols % 4 == 0.
//   values [rows, cols / 2]: the two kept values of each group of 4 columns, in increasing
//        position;
//   positions [rows, squeeze_nm24_position_bytes(cols)]: group g's nibble is byte g / 2 (low
//        nibble for even g, high for odd), nibble = p0 | p1 << 2 with p0 < p1 the kept positions
//        (0..3). A group with fewer than 2 non-zeros stores zeros as values with distinct
//        positions.
static inline size_t squeeze_nm24_position_bytes(size_t cols) { return (cols / 4 + 1) / 2; }
/// Packs a dense row-major W [rows, cols] that is 2:4. Returns 0, or -1 when a group has more
/// than 2 non-zeros (NaN counts as non-zero), with its row and group in *bad_row / *bad_group
/// (either may be NULL); values and positions are then incomplete. Groups with fewer than 2
/// non-zeros keep their non-zeros and fill up with the lowest free positions (values copied from
/// W, so zeros).
int squeeze_nm24_pack_f32(const float *W, size_t rows, size_t cols, float *values, uint8_t *positions,
                          size_t *bad_row, size_t *bad_group);
void squeeze_gemv_nm24_f32(const float *values, const uint8_t *positions, size_t cols,
                           size_t r0, size_t r1, const float *x, float *y);
void squeeze_gemv_nm24_bf16(const uint16_t *values, const uint8_t *positions, size_t cols,
                            size_t r0, size_t r1, const float *x, float *y);

// ---------------------------------------------------------------------------------------------
// Prefill helpers: rows [r0, r1) of a packed form -> dense F32 dst [r1 - r0, cols], EXACT on
// every path (the caller then runs one sgemm per panel). With r1 = r0 + 1 this is also the
// embedding gather of one token's row.
// ---------------------------------------------------------------------------------------------

/// Dense F32 (a copy; for uniformity, an addition to the brief's API).
void squeeze_decode_rows_f32(const float *W, size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_bf16(const uint16_t *W, size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_f16(const uint16_t *W, size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_q8_0(const squeeze_block_q8_0 *W, size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_q4_0(const squeeze_block_q4_0 *W, size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_bitmask_f32(const uint64_t *mask, const float *values, const uint64_t *row_start,
                                     size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_bitmask_bf16(const uint64_t *mask, const uint16_t *values, const uint64_t *row_start,
                                      size_t cols, size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_nm24_f32(const float *values, const uint8_t *positions, size_t cols,
                                  size_t r0, size_t r1, float *dst);
void squeeze_decode_rows_nm24_bf16(const uint16_t *values, const uint8_t *positions, size_t cols,
                                   size_t r0, size_t r1, float *dst);

// ---------------------------------------------------------------------------------------------
// Attention over a BF16 key/value cache (attend.c)
// ---------------------------------------------------------------------------------------------

/// One query row q [hs] of one head against n cached positions: K_j and V_j are the BF16 rows
/// k + j·stride and v + j·stride (hs values each). scores [n]: scratch (left holding the scaled
/// scores). out [hs] = Σ_j softmax(scale · q·K_j)_j · V_j, accumulated in F32; n = 0 gives 0.
void squeeze_attend_bf16(const float *q, const uint16_t *k, const uint16_t *v, size_t stride, size_t n, size_t hs,
                         float scale, float *scores, float *out);

// ---------------------------------------------------------------------------------------------
// Benchmarks (gemv_dense.c)
// ---------------------------------------------------------------------------------------------

/// The sum of p [n] (so the reads cannot be elided), vectorised: the reference read bandwidth
/// for the gemv kernels on the same bytes.
double squeeze_read_bandwidth_probe(const float *p, size_t n);

#ifdef __cplusplus
}
#endif

#endif
