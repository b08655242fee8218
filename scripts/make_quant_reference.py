#!/usr/bin/env python3
"""Write the Q8_0 / Q4_0 block fixture the packed-kernel tests compare against.

Run BY HAND, never in CI; the output is committed:

    python3 -m venv /work/venv-kernels && /work/venv-kernels/bin/pip install numpy gguf safetensors
    /work/venv-kernels/bin/python scripts/make_quant_reference.py     # from the repo root

Output: ``Tests/Fixtures/reference/quant_blocks.safetensors`` (well under 200 KB), read by
``PackedKernelTests.testQuantizersMatchGGUFReference``:

    inputs        F32 [N, 32]  one block of weights per row (the categories below)
    q8_0          U8  [N, 34]  gguf.quants.quantize(inputs, Q8_0) (fp16 d, then 32 int8)
    q4_0          U8  [N, 18]  gguf.quants.quantize(inputs, Q4_0) (fp16 d, then 16 nibble pairs)
    q8_0_dequant  F32 [N, 32]  gguf.quants.dequantize(q8_0, Q8_0)
    q4_0_dequant  F32 [N, 32]  gguf.quants.dequantize(q4_0, Q4_0)

The metadata holds the numpy / gguf versions, the seed and the row range of each category.
gguf-py's Q8_0 / Q4_0 quantizers reproduce ggml's quantize_row_q8_0_ref / _q4_0_ref bit for bit
(its comments say so; both use one F32 operation per step and round d to fp16 with RNE).

Categories (rows of ``inputs``):
  normal_<scale>  random normal blocks at scales 1e-4 .. 1e4 (50 each)
  zero            all-zero blocks (d = 0, id = 0)
  ties_q8         amax = 127 * 2^k so id is a power of two and x * id = k + 0.5 exactly
                  (roundf rounds half away from zero), both signs
  ties_q4         max = -8 * 2^k or +8 * 2^k so x * id + 8.5 is an exact integer (truncation
                  boundary), both signs of max
  fp16_tie        d exactly halfway between two fp16 values (RNE on the stored scale)
  outlier         small values and one huge value (the small ones quantize to 0 or near)
  negmax          the largest magnitude is negative (Q4_0 uses the signed max); equal
                  magnitudes of both signs (the first one wins)
  constant        every value the same
  subnormal       d below fp16's normal range (stored as an fp16 subnormal or 0), and a block
                  with amax 5e-37, whose Q8_0 d is an F32 subnormal (its inverse still finite)
Every block keeps x * id finite: ggml's rule is undefined when id overflows.
"""
import json
import pathlib
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import quantize, dequantize
from safetensors.numpy import save_file

SEED = 20240610
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "Fixtures" / "reference" / "quant_blocks.safetensors"


def main() -> None:
    rng = np.random.default_rng(SEED)
    cats: list[tuple[str, np.ndarray]] = []

    def add(name: str, blocks) -> None:
        b = np.asarray(blocks, dtype=np.float32).reshape(-1, 32)
        cats.append((name, b))

    for scale in (1e-4, 1e-2, 1.0, 1e2, 1e4):
        add(f"normal_{scale:g}", rng.standard_normal((50, 32)) * scale)
    add("zero", np.zeros((3, 32)))

    # Q8_0 ties: amax = 127 * 2^k -> d = 2^k, id = 2^-k; x = (j + 0.5) 2^k -> x * id = j + 0.5.
    ties = []
    for k in (-3, 0, 4):
        for sign in (1, -1):
            j = np.arange(31) - 15  # -15 .. 15
            vals = (j + 0.5) * sign
            ties.append(np.concatenate([[127.0 * sign], vals]) * 2.0**k)
    add("ties_q8", ties)

    # Q4_0 truncation boundaries: max = -8 * 2^k -> d = 2^k, id = 2^-k: x * id + 8.5 is an integer
    # for x = (m - 8.5) 2^k, and just either side of one for x = (m - 8.5 +- 2^-10) 2^k.
    ties4 = []
    for k in (-2, 0, 3):
        for sign in (1, -1):
            m = np.arange(1, 17)  # x * id + 8.5 = m (16 clamps to 15); |x| < 8 d
            vals = np.concatenate([(m - 8.5), (m[:15] - 8.5 + 2.0**-10)]) * sign
            ties4.append(np.concatenate([[-8.0 * sign], vals]) * 2.0**k)
            vals = (m - 8.5 - 2.0**-10) * sign
            ties4.append(np.concatenate([[-8.0 * sign], vals, vals[:15]]) * 2.0**k)
    add("ties_q4", ties4)

    # fp16 RNE ties on the stored d: d = 1 + 2^-11 (-> 1.0) and d = 1 + 3 * 2^-11 (-> 1 + 2^-9),
    # for Q8_0 (amax = 127 d) and Q4_0 (max = -8 d).
    ft = []
    for d in (1 + 2.0**-11, 1 + 3 * 2.0**-11, 2.0**-14 * (1 + 2.0**-11)):
        b = rng.uniform(-1, 1, 32) * d * 100
        b[5] = 127 * d
        ft.append(b)
        b = rng.uniform(-1, 1, 32) * d * 7
        b[9] = -8 * d
        ft.append(b)
    add("fp16_tie", ft)

    out = []
    for big in (60000.0, -3000.0, 1e4):
        b = rng.standard_normal(32) * 0.01
        b[rng.integers(32)] = big
        out.append(b)
    add("outlier", out)

    neg = []
    b = rng.uniform(-1, 1, 32); b[7] = -2.5; neg.append(b)
    b = rng.uniform(-1, 1, 32); b[3] = -2.0; b[20] = 2.0; neg.append(b)   # -2 first
    b = rng.uniform(-1, 1, 32); b[3] = 2.0; b[20] = -2.0; neg.append(b)   # +2 first
    b = -np.abs(rng.standard_normal(32)); neg.append(b)                   # all negative
    add("negmax", neg)

    add("constant", [np.full(32, 0.75), np.full(32, -3.0), np.full(32, 1e-3)])

    sub = []
    for scale in (1e-3, 3e-5, 1e-6, 1e-9, 1e-36):
        sub.append(rng.standard_normal(32) * scale)
    b = rng.uniform(-1, 1, 32) * 4e-37; b[11] = 5e-37   # Q8_0's d = 3.9e-39: an F32 subnormal
    sub.append(b)
    add("subnormal", sub)

    x = np.concatenate([b for _, b in cats]).astype(np.float32)
    # ggml's rule needs a finite x * id (else roundf / the int8 cast are undefined).
    for t in (Q.Q8_0, Q.Q4_0):
        with np.errstate(divide="ignore"):
            if t == Q.Q8_0:
                d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
            else:
                d = np.take_along_axis(x, np.abs(x).argmax(axis=1, keepdims=True), axis=1) / np.float32(-8)
            idv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
        assert np.all(np.isfinite(x * idv)), f"{t.name}: x * id not finite"

    q8 = quantize(x, Q.Q8_0)
    q4 = quantize(x, Q.Q4_0)
    tensors = {
        "inputs": x,
        "q8_0": np.ascontiguousarray(q8, dtype=np.uint8),
        "q4_0": np.ascontiguousarray(q4, dtype=np.uint8),
        "q8_0_dequant": np.ascontiguousarray(dequantize(q8, Q.Q8_0), dtype=np.float32),
        "q4_0_dequant": np.ascontiguousarray(dequantize(q4, Q.Q4_0), dtype=np.float32),
    }
    assert tensors["q8_0"].shape == (len(x), 34) and tensors["q4_0"].shape == (len(x), 18)
    ranges, start = {}, 0
    for name, b in cats:
        ranges[name] = [start, start + len(b)]
        start += len(b)
    gguf_version = getattr(gguf, "__version__", None)
    if gguf_version is None:
        from importlib.metadata import version
        gguf_version = version("gguf")
    meta = {
        "generator": "scripts/make_quant_reference.py",
        "seed": str(SEED),
        "numpy": np.__version__,
        "gguf": gguf_version,
        "python": sys.version.split()[0],
        "categories": json.dumps(ranges),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata=meta)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(x)} blocks)")


if __name__ == "__main__":
    main()
