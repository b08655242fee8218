#!/usr/bin/env python3
"""Write the GPTQ fixture (ggml Q8_0 / Q4_0 grids) that Squeeze's GPTQ is compared against.

Run BY HAND, never in CI; the outputs are committed:

    /work/venv/bin/python scripts/make_gptq_reference.py     # from the repo root
    (needs torch, numpy, gguf and safetensors; no network access)

Outputs
-------
    Tests/Fixtures/reference/gptq.safetensors   (about 300 KB)
    Tests/Fixtures/reference/gptq.json          (the cases, their parameters and errors)

What it computes
----------------
GPTQ (Frantar et al. 2022), a float64 torch re-implementation of ``GPTQ.fasterquant`` of
github.com/IST-DASLab/gptq (gptq.py), with ggml's block quantizers in place of the reference's
min/max quantizer.  The sweep is the one of ``OBSSweep`` / ``sparseGPT`` in Sources/Compression:

* W is the HF Conv1D weight ``[in, out]``; the sweep works on ``Wt = W.T [out, in]`` (rows =
  outputs, columns = inputs); H = XᵀX ``[in, in]`` (float64, from a float32 X).  The reference
  accumulates (2 / n) XᵀX; a positive factor does not change the result (damp scales with it,
  the Cholesky factor of H⁻¹ by a common c, and err · Hinv[j, j:] = (w - q) / d · Hinv[j, j:]
  is invariant).
* dead = diag(H) == 0: H[dead, dead] = 1, Wt[:, dead] = 0.
* damp = percdamp · mean(diag(H)) (after the dead fix); H += damp · I.
* Hinv = the upper Cholesky factor U (Uᵀ U = H⁻¹), computed as
  ``torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)``.
* for i1 in 0, B, 2B, ...: i2 = min(i1 + B, in); W1 = Wt[:, i1:i2] (copy); for each column
  i of the block: q = quant(W1[:, i]); err = (W1[:, i] - q) / Hinv[i, i];
  W1[:, i:] -= err ⊗ Hinv[i, i:]; Err1[:, i] = err.  After the block Wt[:, i1:i2] = Q1 and
  Wt[:, i2:] -= Err1 @ Hinv[i1:i2, i2:].  Everything in float64 except the quantizer below.

The quantizer: ggml blocks of 32 consecutive inputs (columns of Wt) per output row.

* Group scale (ggml's quantize_row_q8_0_ref / _q4_0_ref), from the group's values x, each
  converted to float32, all arithmetic in float32:
    Q8_0: amax = max |x|;                            d = amax / 127
    Q4_0: max = the x with the largest |x| (the first one on ties), sign kept;  d = max / -8
    id = 1 / d if d != 0 else 0;  stored scale = fp16(d) (round to nearest even, numpy cast).
* One weight w (float64 in the sweep): x = float32(w), v = x · id (float32);
    Q8_0: code = roundf(v) (half away from zero), clamped to [-128, 127];
          value = float32(fp16(d)) · code (float32)
    Q4_0: code = trunc(v + 8.5) (the float32 sum, truncated toward zero as C's (int8_t) cast),
          clamped to [0, 15] (ggml clamps above with MIN(15, .) only; below is never reached
          by ggml's own inputs, but GPTQ's updated values can go past the group's max);
          value = float32(fp16(d)) · (code - 8) (float32)
  the value, widened to float64, is the q of the error feedback: exactly what ggml dequantizes.
* Natural order (act_order = false): when the sweep reaches column j with j % 32 == 0 the
  scales of group [j, j + 32) are computed from the CURRENT values of that group, i.e. W1 with
  the errors of every earlier column fed back (the block size must be a multiple of 32 so a
  group never straddles two blocks).  NOTE: the reference code takes these values from W, not
  W1 (``find_params(W[:, (i1 + i):(i1 + i + groupsize)])``), so inside a block it misses the
  updates of the block's earlier columns; the two agree when the block size is 32.  This
  fixture uses the current values (mathematically independent of the block size); the JSON
  field ``codes_differing_with_reference_stale_scales`` counts how many codes the reference's
  variant would change.
* act_order (static groups): all group scales are computed up front from Wt after the dead
  fix (before any update); the columns are processed in the order
  perm = argsort(diag(H), descending, stable: ties by index), diag(H) after the dead fix and
  before damping (as the reference); H is permuted as H[perm][:, perm]; each column is
  quantized with the precomputed scale of its own (natural, contiguous) group
  (original index // 32); the result is un-permuted.
* RTN: the same group rules applied to the ORIGINAL W (no dead-input zeroing, no feedback),
  which is exactly gguf.quants.quantize(W.T float32, Q8_0 / Q4_0).

Errors: err = trace((W - Ŵ)ᵀ H (W - Ŵ)) = ||X (W - Ŵ)||_F² in float64, with W the stored float32
original weight, Ŵ the stored float32 result and H the stored (undamped) Hessian.  The script
asserts err_gptq < err_rtn for every case.

Safetensors keys (``<layer>`` and ``<case>`` as listed in gptq.json)
---------------------------------------------------------------------
The original weight and the Hessian are stored once per layer (several cases share a layer;
per-case copies of the 96 x 96 float64 Hessian would not fit the size budget):
    <layer>.w         F32 [in, out]       the original weight W (HF Conv1D layout)
    <layer>.h         F64 [in, in]        H = XᵀX (undamped; dead inputs have zero rows/columns)
per case (the JSON entry of a case names its layer and its "w" / "h" keys):
    <case>.q          F32 [in, out]       the GPTQ result, dequantized (HF layout)
    <case>.codes      I8  [out, in]       codes (Q8_0: -128..127, Q4_0: 0..15, i.e. nibble values)
    <case>.scales     F16 [out, in / 32]  the stored fp16 scales d of each row's groups
    <case>.rtn        F32 [in, out]       round-to-nearest, dequantized (HF layout)
    <case>.err_gptq   F64 []              ||X (W - q)||_F²
    <case>.err_rtn    F64 []              ||X (W - rtn)||_F²
(Squeeze's SafeTensorsFile does not read I8 as of this writing; set CODES_DTYPE below to
np.uint8 to store the codes' two's-complement bytes as U8 instead.  F64 entries are exact only
through SafeTensorsFile.bytes(): floats() narrows to Float.)

Data: per layer, W = 0.05 · standard normal with a few outliers (x 6 .. 10), X [256, in] =
(independent noise + shared latent factors) with per-input scales (correlated inputs, uneven
diag(H)), dead inputs as all-zero columns of X; everything from np.random.default_rng(seed),
cast to float32 before use.  The X themselves are not stored (H is all the algorithm sees).

Checks (assertions, before anything is written)
------------------------------------------------
1. The RTN codes + scales, packed into ggml block bytes (fp16 d little endian, then 32 int8
   codes for Q8_0; for Q4_0 16 bytes with byte j = code[j] | code[j + 16] << 4), equal
   gguf.quants.quantize(W.T float32, type) byte for byte; and gguf.quants.dequantize of those
   bytes equals the stored rtn.
2. The GPTQ codes + scales, packed the same way and dequantized by gguf, equal the stored q.
3. GPTQ with H = identity gives exactly RTN (codes, scales and values; natural order and
   act_order, every block size used).
4. Dead inputs come out exactly 0 in q.
5. err_gptq < err_rtn, and err recomputed as ||X (W - Ŵ)||_F² agrees to 1e-9 relative.
Diagnostics in the JSON (per case): min_code_margin (the smallest distance of x · id from a
code decision boundary, in units of one quantization step), and
codes_differing_with_alt_hinv: codes changed when Hinv is computed another way (explicit
triangular inverse in numpy, the route an independent implementation may take), a measure of
how exactly a float64 re-implementation can be expected to match;
codes_differing_with_other_blocksize: codes changed when the case is rerun with block size
32 <-> 128 (0 expected: with current-value scales the block size changes only the float64
rounding); codes_differing_with_reference_stale_scales (natural order): see above.
"""
import os

# Keep CPU use modest (the machine is shared).
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import json
import math
import platform
import sys
from pathlib import Path

import numpy as np
import torch
import gguf
from gguf import GGMLQuantizationType as GQ
from gguf.quants import quantize as gguf_quantize, dequantize as gguf_dequantize
import safetensors
from safetensors.numpy import save_file

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "Tests" / "Fixtures" / "reference"
OUT_ST = OUT_DIR / "gptq.safetensors"
OUT_JSON = OUT_DIR / "gptq.json"

GROUP = 32
N_SAMPLES = 256
CODES_DTYPE = np.int8          # np.uint8: the same bytes, readable by SafeTensorsFile.integers
FORMATS = {"Q8_0": GQ.Q8_0, "Q4_0": GQ.Q4_0}

# name -> (seed, in, out, dead inputs)
LAYERS = {
    "l96": (20250101, 96, 40, []),
    "l64dead": (20250102, 64, 24, [5, 32]),   # one dead input inside a group, one at a group start
}

# name -> (layer, format, blocksize, percdamp, act_order)
CASES = {
    "l96_q4_0":          ("l96", "Q4_0", 128, 0.01, False),
    "l96_q8_0":          ("l96", "Q8_0", 128, 0.01, False),
    "l96_q4_0_act":      ("l96", "Q4_0", 128, 0.01, True),
    "l64dead_q4_0":      ("l64dead", "Q4_0", 128, 0.01, False),
    "l64dead_q8_0_bs32": ("l64dead", "Q8_0", 32, 0.01, False),
    "l64dead_q8_0_act_bs32": ("l64dead", "Q8_0", 32, 0.01, True),
}
# With 96 or 64 inputs a block size of 128 is one block: the lazy update after a block
# (Wt[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]) runs only in the block-size-32 cases.


# ---------------------------------------------------------------- data
def make_layer(seed, n_in, n_out, dead):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n_in, n_out)) * 0.05
    n_out_liers = 6
    pos = rng.choice(n_in * n_out, size=n_out_liers, replace=False)
    W.ravel()[pos] *= rng.uniform(6, 10, size=n_out_liers)
    W = W.astype(np.float32)
    # Correlated inputs: shared latent factors + independent noise, uneven per-input scales.
    k = 6
    F = rng.standard_normal((N_SAMPLES, k))
    B = rng.standard_normal((k, n_in))
    Z = rng.standard_normal((N_SAMPLES, n_in))
    scale = np.exp(rng.uniform(-1.0, 1.0, size=n_in))
    X = (0.4 * Z + F @ B) * scale[None, :]
    X[:, dead] = 0
    X = X.astype(np.float32)
    Xd = X.astype(np.float64)
    H = Xd.T @ Xd
    return W, X, H


# ---------------------------------------------------------------- ggml grids
def group_params(fmt, x32):
    """ggml's scale of each row of x32 [rows, 32] (float32): (fp16 d, float32 id)."""
    assert x32.dtype == np.float32 and x32.ndim == 2 and x32.shape[1] == GROUP
    if fmt == "Q8_0":
        d = (np.abs(x32).max(axis=1) / np.float32(127)).astype(np.float32)
    else:
        imax = np.abs(x32).argmax(axis=1)                  # first index on ties
        mx = x32[np.arange(x32.shape[0]), imax]
        d = (mx / np.float32(-8)).astype(np.float32)
    assert d.dtype == np.float32
    with np.errstate(divide="ignore"):
        idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    return d.astype(np.float16), idv


def boundaries(fmt):
    """Values of v = x * id where the code changes (Q8_0: k + 0.5; Q4_0: v + 8.5 integer)."""
    if fmt == "Q8_0":
        return np.arange(-128, 127) + 0.5                  # codes -128 | -127 ... 126 | 127
    return np.arange(1, 16) - 8.5                          # trunc(v + 8.5) = 0 | 1 ... 14 | 15


def quantize_values(fmt, x32, d16, idv):
    """Codes, float32 dequantized values and the smallest boundary distance of x32 (any shape,
    broadcasting against d16 / idv)."""
    assert x32.dtype == np.float32 and d16.dtype == np.float16 and idv.dtype == np.float32
    v = x32 * idv
    assert v.dtype == np.float32 and np.all(np.isfinite(v))
    vd = v.astype(np.float64)
    margin = float(np.min(np.abs(vd[..., None] - boundaries(fmt)))) if vd.size else math.inf
    if fmt == "Q8_0":
        # roundf: half away from zero; |v| + 0.5 is exact in float64 for a float32 v.
        r = np.sign(vd) * np.floor(np.abs(vd) + 0.5)
        code = np.clip(r, -128, 127).astype(np.int8)
        value = d16.astype(np.float32) * code.astype(np.float32)
    else:
        s = v + np.float32(8.5)
        assert s.dtype == np.float32
        code = np.clip(np.trunc(s), 0, 15).astype(np.int8)
        value = d16.astype(np.float32) * (code.astype(np.float32) - np.float32(8))
    assert value.dtype == np.float32
    return code, value, margin


def rtn(fmt, Wt32):
    """Round-to-nearest of Wt32 [out, in] (float32): codes [out, in], fp16 scales, values."""
    rows, cols = Wt32.shape
    codes = np.zeros((rows, cols), np.int8)
    scales = np.zeros((rows, cols // GROUP), np.float16)
    vals = np.zeros((rows, cols), np.float32)
    for g in range(cols // GROUP):
        blk = Wt32[:, g * GROUP:(g + 1) * GROUP]
        d16, idv = group_params(fmt, blk)
        c, v, _ = quantize_values(fmt, blk, d16[:, None], idv[:, None])
        codes[:, g * GROUP:(g + 1) * GROUP] = c
        vals[:, g * GROUP:(g + 1) * GROUP] = v
        scales[:, g] = d16
    return codes, scales, vals


def pack_blocks(fmt, codes, scales):
    """ggml block bytes [out, (in / 32) * bytes_per_block] from codes [out, in] and fp16 scales."""
    rows, cols = codes.shape
    out = []
    for g in range(cols // GROUP):
        d = scales[:, g:g + 1].astype("<f2").view(np.uint8)                    # [rows, 2]
        c = codes[:, g * GROUP:(g + 1) * GROUP]
        if fmt == "Q8_0":
            qs = c.astype(np.int8).view(np.uint8)                              # [rows, 32]
        else:
            assert np.all((c >= 0) & (c <= 15))
            cu = c.astype(np.uint8)
            qs = cu[:, :16] | (cu[:, 16:] << np.uint8(4))                      # [rows, 16]
        out += [d, qs]
    return np.concatenate(out, axis=1)


# ---------------------------------------------------------------- GPTQ
def hinv_torch(H):
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def hinv_numpy_alt(H):
    """The same factor by another route: explicit inverse of L, H⁻¹ = L⁻ᵀ L⁻¹, symmetrized."""
    Hn = H.numpy()
    n = Hn.shape[0]
    L = np.linalg.cholesky(Hn)
    Linv = np.linalg.solve(L, np.eye(n))
    Hi = Linv.T @ Linv
    Hi = (Hi + Hi.T) / 2
    return torch.from_numpy(np.linalg.cholesky(Hi).T.copy())


def gptq(W_hf, H_in, fmt, blocksize, percdamp, act_order, hinv_fn=hinv_torch, scales_from="current"):
    """GPTQ of W_hf [in, out] (float32) with Hessian H_in [in, in]; returns
    (q [in, out] float32, codes [out, in] int8, scales [out, in / 32] fp16, min code margin)."""
    W = torch.tensor(W_hf, dtype=torch.float64).t().contiguous()            # [out, in]
    rows, cols = W.shape
    assert cols % GROUP == 0
    H = torch.tensor(H_in, dtype=torch.float64).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    ngroups = cols // GROUP
    d16 = np.zeros((rows, ngroups), np.float16)
    idv = np.zeros((rows, ngroups), np.float32)
    have = np.zeros(ngroups, bool)
    if act_order:
        for g in range(ngroups):
            d16[:, g], idv[:, g] = group_params(fmt, W[:, g * GROUP:(g + 1) * GROUP].numpy().astype(np.float32))
        have[:] = True
        perm = np.argsort(-torch.diag(H).numpy(), kind="stable")
    else:
        assert blocksize % GROUP == 0, "natural order: groups must not straddle blocks"
        perm = np.arange(cols)
    pt = torch.from_numpy(perm)
    W = W[:, pt].contiguous()
    H = H[pt][:, pt].contiguous()
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(cols)
    H[idx, idx] += damp
    Hinv = hinv_fn(H)

    codes = np.zeros((rows, cols), np.int8)
    Q = torch.zeros_like(W)
    margin = math.inf
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(count):
            j = int(perm[i1 + i])                       # the original input index
            g = j // GROUP
            if not act_order and j % GROUP == 0:
                if scales_from == "current":
                    src = W1[:, i:i + GROUP]
                else:                                   # the reference code's W (stale in-block)
                    src = W[:, i1 + i:i1 + i + GROUP]
                assert src.shape[1] == GROUP
                d16[:, g], idv[:, g] = group_params(fmt, src.numpy().astype(np.float32))
                have[g] = True
            assert have[g]
            w = W1[:, i].clone()
            c, v, m = quantize_values(fmt, w.numpy().astype(np.float32), d16[:, g], idv[:, g])
            margin = min(margin, m)
            codes[:, j] = c
            q = torch.from_numpy(v.astype(np.float64))
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    invperm = torch.from_numpy(np.argsort(perm))
    Q = Q[:, invperm]
    q_hf = Q.t().numpy().astype(np.float32)
    assert np.array_equal(q_hf.astype(np.float64), Q.t().numpy()), "q values are float32 by construction"
    assert np.all(have)
    return q_hf, codes, d16, margin


def layer_error(W32, What32, H):
    D = W32.astype(np.float64) - What32.astype(np.float64)
    return float(np.trace(D.T @ H @ D))


# ---------------------------------------------------------------- main
def main() -> None:
    tensors: dict = {}
    layers_json: dict = {}
    layer_data: dict = {}
    for lname, (seed, n_in, n_out, dead) in LAYERS.items():
        W, X, H = make_layer(seed, n_in, n_out, dead)
        assert np.all(np.diag(H)[dead] == 0) and np.all(np.diag(H)[[j for j in range(n_in) if j not in dead]] > 0)
        assert np.linalg.matrix_rank(X[:, [j for j in range(n_in) if j not in dead]].astype(np.float64)) == n_in - len(dead)
        layer_data[lname] = (W, X, H)
        tensors[f"{lname}.w"] = np.ascontiguousarray(W, np.float32)
        tensors[f"{lname}.h"] = np.ascontiguousarray(H, np.float64)
        dh = np.diag(H)
        layers_json[lname] = {
            "seed": seed, "in": n_in, "out": n_out, "n_samples": N_SAMPLES, "dead_inputs": dead,
            "w": f"{lname}.w", "h": f"{lname}.h",
            "diag_h_min_live": float(dh[dh > 0].min()), "diag_h_max": float(dh.max()),
            "output_energy": float(np.trace(W.astype(np.float64).T @ H @ W.astype(np.float64))),
        }

    cases_json: dict = {}
    for cname, (lname, fmt, bs, pd, act) in CASES.items():
        W, X, H = layer_data[lname]
        n_in, n_out = W.shape
        Wt32 = np.ascontiguousarray(W.T)

        # RTN and check 1 (gguf-py bytes).
        rc, rs, rv = rtn(fmt, Wt32)
        ref_bytes = gguf_quantize(Wt32, FORMATS[fmt])
        mine = pack_blocks(fmt, rc, rs)
        assert ref_bytes.shape == mine.shape and np.array_equal(ref_bytes, mine), f"{cname}: RTN bytes != gguf"
        assert np.array_equal(gguf_dequantize(mine, FORMATS[fmt]).reshape(n_out, n_in), rv), f"{cname}: RTN values"
        rtn_hf = np.ascontiguousarray(rv.T)

        # GPTQ and check 2 (its codes + scales are ggml blocks whose dequantization is q).
        q, codes, scales, margin = gptq(W, H, fmt, bs, pd, act)
        deq = gguf_dequantize(pack_blocks(fmt, codes, scales), FORMATS[fmt]).reshape(n_out, n_in)
        assert np.array_equal(deq, q.T), f"{cname}: GPTQ codes/scales do not dequantize to q"

        # Check 3: H = identity gives RTN exactly.
        qi, ci, si, _ = gptq(W, np.eye(n_in), fmt, bs, pd, act)
        assert np.array_equal(ci, rc) and np.array_equal(si.view(np.uint16), rs.view(np.uint16)) \
            and np.array_equal(qi, rtn_hf), f"{cname}: H = I is not RTN"

        # Check 4: dead inputs are exactly 0.
        dead = layers_json[lname]["dead_inputs"]
        assert np.all(q[dead, :] == 0), f"{cname}: dead inputs not zero"

        # Check 5: errors.
        e_g, e_r = layer_error(W, q, H), layer_error(W, rtn_hf, H)
        Xd = X.astype(np.float64)
        for e, What in ((e_g, q), (e_r, rtn_hf)):
            direct = float(np.sum((Xd @ (W.astype(np.float64) - What.astype(np.float64))) ** 2))
            assert abs(direct - e) <= 1e-9 * e, (cname, direct, e)
        assert e_g < e_r, f"{cname}: GPTQ error {e_g} not below RTN {e_r}"

        # Diagnostics.
        _, c_alt, _, _ = gptq(W, H, fmt, bs, pd, act, hinv_fn=hinv_numpy_alt)
        n_alt = int(np.sum(c_alt != codes))
        other_bs = GROUP if bs != GROUP else 128
        _, c_obs, _, _ = gptq(W, H, fmt, other_bs, pd, act)
        n_obs = int(np.sum(c_obs != codes))
        n_stale = None
        if not act:
            _, c_st, _, _ = gptq(W, H, fmt, bs, pd, act, scales_from="reference")
            n_stale = int(np.sum(c_st != codes))
            if bs == GROUP:
                assert n_stale == 0, f"{cname}: block size 32 must match the reference's scale source"

        tensors[f"{cname}.q"] = np.ascontiguousarray(q, np.float32)
        tensors[f"{cname}.codes"] = np.ascontiguousarray(codes.astype(CODES_DTYPE) if CODES_DTYPE is np.int8
                                                         else codes.view(np.uint8))
        tensors[f"{cname}.scales"] = np.ascontiguousarray(scales, np.float16)
        tensors[f"{cname}.rtn"] = rtn_hf
        tensors[f"{cname}.err_gptq"] = np.array(e_g, dtype=np.float64)
        tensors[f"{cname}.err_rtn"] = np.array(e_r, dtype=np.float64)
        cases_json[cname] = {
            "layer": lname, "w": f"{lname}.w", "h": f"{lname}.h",
            "format": fmt, "group_size": GROUP, "blocksize": bs, "percdamp": pd,
            "act_order": act, "static_groups": act,
            "in": n_in, "out": n_out, "dead_inputs": dead,
            "shapes": {"w": [n_in, n_out], "h": [n_in, n_in], "q": [n_in, n_out], "rtn": [n_in, n_out],
                       "codes": [n_out, n_in], "scales": [n_out, n_in // GROUP]},
            "err_gptq": e_g, "err_rtn": e_r, "err_ratio": e_g / e_r,
            "codes_differing_from_rtn": int(np.sum(codes != rc)),
            "min_code_margin": margin,
            "codes_differing_with_alt_hinv": n_alt,
            "codes_differing_with_reference_stale_scales": n_stale,
            "other_blocksize": other_bs,
            "codes_differing_with_other_blocksize": n_obs,
        }
        print(f"{cname:20s} {fmt} bs={bs:3d} act={int(act)}  err_gptq={e_g:.6g}  err_rtn={e_r:.6g}  "
              f"ratio={e_g / e_r:.3f}  margin={margin:.2e}  alt_hinv_diff={n_alt}  stale_diff={n_stale}  "
              f"bs{other_bs}_diff={n_obs}")

    gguf_version = getattr(gguf, "__version__", None)
    if gguf_version is None:
        from importlib.metadata import version
        gguf_version = version("gguf")
    doc = {
        "meta": {
            "generator": "scripts/make_gptq_reference.py",
            "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
            "gguf": gguf_version, "safetensors": safetensors.__version__,
            "codes_dtype": "I8" if CODES_DTYPE is np.int8 else "U8",
            "note": "H = XᵀX undamped; errors are trace((W - Ŵ)ᵀ H (W - Ŵ)); see the script's docstring",
        },
        "layers": layers_json,
        "cases": cases_json,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT_ST), metadata={"generator": "scripts/make_gptq_reference.py",
                                              "cases": json.dumps(list(CASES))})
    OUT_JSON.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {OUT_ST} ({OUT_ST.stat().st_size} bytes) and {OUT_JSON} ({OUT_JSON.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
