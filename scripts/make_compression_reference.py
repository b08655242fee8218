#!/usr/bin/env python3
"""Generate independent numpy/torch reference fixtures for the compression code.

This script is run BY HAND, never in CI.  Its outputs are committed and the
Swift tests (pruning, SparseGPT, Kronecker / low-rank factorization and
``squeeze analyze``) compare against them:

    Tests/Fixtures/reference/compression.json
    Tests/Fixtures/reference/compression.safetensors

How to rerun
------------
    /work/venv/bin/python scripts/make_compression_reference.py     # from the repo root
    (needs numpy, torch and safetensors; no network access, no scipy)

Everything is deterministic: the only randomness is numpy's
``np.random.default_rng(SEED).standard_normal(shape)`` with the seeds listed
below (PCG64 + ziggurat normals, stable across numpy versions >= 1.17); each
draw is cast to float32 BEFORE use and the float32 inputs are stored in the
safetensors file, so Swift uses exactly the same inputs.  All computation is in
float64 (from the float32 inputs); results are stored as float32 tensors (F32)
in the safetensors file or as float64 numbers in the JSON.  Masks are F32 0/1
(1 = kept, 0 = pruned).  Re-running with another numpy / LAPACK may change the
float64 results in the last few ulps, nothing else.

Conventions
-----------
* Weight matrices are in Hugging Face GPT-2 ``Conv1D`` layout ``W [in, out]``
  (``y = x W + b``).  Real weights come from the committed fixture model
  ``Tests/Fixtures/tiny-gpt2/model.safetensors`` (keys ``transformer.<name>``,
  n_embd 16, 2 layers); below and in every output, ``<name>`` is the name
  WITHOUT the ``transformer.`` prefix, e.g. ``h.0.mlp.c_fc.weight`` [16, 64].
  Those weights are NOT copied into the fixture: Swift reads them from the model.
* "Row-major ravel" = numpy's default C order; flat index = r * cols + c.
* All sorts are stable (``np.argsort(..., kind="stable")``): among equal
  values the lower (flat) index comes first, i.e. is pruned first.
* "k = floor(s * n)" is ``math.floor(s * n)`` of the float64 product.
* Each selection fixture records ``min_rel_gap``: the smallest relative gap
  between the largest pruned and the smallest kept score (over all groups)
  -- how robust the mask is to float32 round-off in an implementation.
  No ties occur at any decision boundary in these fixtures.

Fixtures (safetensors key -> meaning; JSON section of the same name)
--------------------------------------------------------------------
1. Magnitude pruning, per layer.  W = h.0.mlp.c_fc.weight [16, 64].
   k = floor(s * W.size); order = argsort(|W|.ravel(), stable);
   mask = ones; mask.ravel()[order[:k]] = 0.
     "magnitude.mask"   [16, 64]  s = 0.5  (k = 512)
     "magnitude30.mask" [16, 64]  s = 0.3  (k = 307)
   JSON "magnitude" / "magnitude30": layer, shape, sparsity, k, pruned,
   realized_sparsity, min_rel_gap.
2. Global magnitude.  Layers L = [h.0.attn.c_attn.weight [16, 48],
   h.0.mlp.c_fc.weight [16, 64], h.1.mlp.c_proj.weight [64, 16]], s = 0.6:
   scores = concatenate(|W_l|.ravel() for l in L) (that order);
   k = floor(s * total) (= floor(0.6 * 2816) = 1689); the first k of the
   stable argsort are pruned; the global mask is split back per layer.
     "global.mask.<name>" for each of the three layers (shape of the layer)
   JSON "global": layers, sparsity, total, k, per_layer_sparsity {name: s_l},
   per_layer_pruned {name: count}, min_rel_gap.
3. 2:4 (N:M, N = 2 pruned of every M = 4).  W = h.0.mlp.c_fc.weight [16, 64]:
   for each output column o and group g of 4 consecutive INPUT rows
   (rows 4g..4g+3), prune the 2 entries with the smallest |W| (stable argsort
   within the group, prune the first 2).
     "nm24.mask" [16, 64]
4. Wanda.  W = h.1.mlp.c_fc.weight [16, 64];
   X = rng(11).standard_normal((96, 16)) as float32;
   norm_j = ||X[:, j]||_2 (float64); score[j, o] = |W[j, o]| * norm_j;
   for each output column o prune the floor(0.5 * in) = 8 entries with the
   smallest score (stable argsort along the column).
     "wanda.X"    [96, 16]  (the float32 calibration input)
     "wanda.mask" [16, 64]
   JSON "wanda": also "norms" (the 16 column norms of X, float64).
5. SparseGPT (Frantar & Alistarh 2023), a float64 numpy re-implementation of
   ``fasterprune`` from github.com/IST-DASLab/sparsegpt (sparsegpt.py),
   without quantization.  W = h.0.mlp.c_proj.weight ([64, 16] Conv1D);
   the algorithm works on the nn.Linear layout Wt = W.T [out = 16, in = 64].
   X = rng(12).standard_normal((256, 64)) as float32; sparsity 0.5,
   blocksize 32, percdamp 0.01.
     H = X^T X (float64).  The reference accumulates H = (2 / n) X^T X; that
       positive factor does not change the result: damp scales with it, the
       Cholesky factor of H^-1 scales by a common c, so W1^2 / diag(Hinv1)^2
       scales uniformly (same masks) and err * Hinv1[i, i:] = (w - q) / d *
       Hinv1[i, i:] is invariant.
     dead = diag(H) == 0: H[dead, dead] = 1, Wt[:, dead] = 0 (none here).
     damp = 0.01 * mean(diag(H)); H += damp * I.
     Hinv = upper Cholesky factor U of H^-1 (U^T U = H^-1); computed as
       torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)),
       upper=True) does.
     for i1 in 0, 32, ...: i2 = min(i1 + 32, in); W1 = Wt[:, i1:i2] (copy);
       Hinv1 = Hinv[i1:i2, i1:i2]; Q1, Err1 = zeros;
       unstructured: tmp = W1^2 / diag(Hinv1)[None, :]^2 (W1 as updated by
         the earlier blocks); thresh = sort(tmp.ravel())[int(tmp.size * 0.5)];
         mask1 = tmp <= thresh  (NOTE: this prunes int(size * s) + 1 = 257 of
         the 512 entries of a block, so the realized sparsity is 514 / 1024 =
         0.501953125, exactly as the reference code does);
       2:4 variant (prunen = 2, prunem = 4): mask1 starts all False; at each
         local column i with i % 4 == 0: tmp = W1[:, i:i+4]^2 /
         diag(Hinv1)[i:i+4]^2 (current W1), and for each row the 2 smallest
         (torch.topk(largest=False); ties -> lowest index, here: stable
         argsort, first 2) are set True in mask1[:, i:i+4];
       for i in 0..<count: w = W1[:, i]; d = Hinv1[i, i];
         q = w with mask1[:, i] entries zeroed; Q1[:, i] = q;
         err = (w - q) / d; W1[:, i:] -= outer(err, Hinv1[i, i:]);
         Err1[:, i] = err;
       Wt[:, i1:i2] = Q1; Wt[:, i2:] -= Err1 @ Hinv[i1:i2, i2:].
     The result is transposed back to Conv1D layout [64, 16].
     "sparsegpt.X"    [256, 64]  (the float32 calibration input)
     "sparsegpt.W"    [64, 16]   unstructured result (pruned + updated)
     "sparsegpt24.W"  [64, 16]   2:4 result (2 of every 4 consecutive input
                                 rows pruned in each output column)
   JSON "sparsegpt": settings, realized sparsities, and relative output
   reconstruction errors  ||X W - X W'||_F / ||X W||_F  (X = sparsegpt.X,
   W' = the STORED float32 result, evaluated in float64) for
   "sparsegpt" (unstructured), "sparsegpt24", "magnitude" (fixture-1 style
   per-layer magnitude at s = 0.5 of the same W) and "magnitude24"
   (fixture-3 style 2:4 magnitude of the same W).  The numpy implementation
   is cross-checked against a line-by-line torch float64 transcription of
   the reference code (torch.topk included).
6. Nearest Kronecker product (Van Loan & Pitsianis).  W [in = m1 m2,
   out = n1 n2]; the rearrangement R [(m1 n1), (m2 n2)] is
     R[a*n1 + c, b*n2 + d] = W[a*m2 + b, c*n2 + d]
   (a < m1, b < m2, c < n1, d < n2), i.e. W.reshape(m1, m2, n1, n2)
   .transpose(0, 2, 1, 3).reshape(m1 n1, m2 n2).  With R = U S V^T,
   A_i = sqrt(s_i) U[:, i].reshape(m1, n1), B_i = sqrt(s_i) V[:, i].reshape(m2, n2)
   and recon_k = sum_{i<k} np.kron(A_i, B_i) (HF layout [in, out]).
   Checked: the index formula against an explicit loop; ||W - kron(A, B)||_F
   == ||R - vec(A) vec(B)^T||_F for random A, B; recon_1 equals the best
   rank-1 Kronecker approximation found by alternating least squares
   directly on W; ||W - recon_k||_F == sqrt(sum_{i>=k} s_i^2).
   (a) W = rng(21).standard_normal((12, 20)) float32, m1=3, n1=4, m2=4, n2=5:
     "nkp.W" [12, 20], "nkp.R" [12, 20], "nkp.recon1" [12, 20],
     "nkp.recon2" [12, 20]
     JSON "nkp": m1, n1, m2, n2, singular_values (of R, 12 values),
     error1, error2 (||W - recon_k||_F in float64), tail1, tail2
     (sqrt(sum_{i>=k} s_i^2)).
   (b) W = h.0.mlp.c_fc.weight [16, 64], m1=4, n1=8, m2=4, n2=8, k = 1:
     "nkp_fc.R" [32, 32], "nkp_fc.recon1" [16, 64]
     JSON "nkp_fc": layer, shape, singular_values (32), error1, tail1.
7. Truncated SVD (Eckart-Young).  W = rng(31).standard_normal((30, 20))
   float32, rank r = 5: W = U S V^T, W0 = U_r sqrt(S_r) [30, 5],
   W1 = V_r sqrt(S_r) [20, 5], recon = W0 W1^T.
     "lowrank.W" [30, 20], "lowrank.recon" [30, 20]
   JSON "lowrank": rank, singular_values (20), error (||W - recon||_F),
   tail (sqrt(sum_{i>=5} s_i^2)).
   (Factors / singular vectors are never stored: their signs are arbitrary.)
8. Analysis (``squeeze analyze``) of Tests/Fixtures/tiny-gpt2 in float64 from
   the float32 weights, for every 2-D weight: wte.weight, wpe.weight, then
   h.N.{attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj}.weight for N = 0, 1.
   JSON "analysis": {"weights": [ {name, shape, params (= size),
   nonzero (count of != 0), fro (||W||_F), spectral (largest singular value),
   stable_rank (fro^2 / spectral^2), stable_rank_unsquared (fro / spectral),
   effective_rank_90, effective_rank_99 (smallest r >= 1 with
   sum_{i<=r} s_i^2 >= 0.90 (0.99) * sum_i s_i^2, singular values sorted
   descending, r counted from 1), singular_values} ... ],
   "totals": over the 8 block linear weights only (not wte / wpe):
   {layers, params, nonzero, sum_stable_rank, log10_prod_spectral_sq,
   bound_proxy = prod_i spectral_i^2 * sum_i stable_rank_i,
   log10_bound_proxy}}.

The JSON also holds "meta" (library versions, seeds, source model).
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
import safetensors
from safetensors.numpy import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "Tests/Fixtures/tiny-gpt2/model.safetensors"
OUT_DIR = ROOT / "Tests/Fixtures/reference"
OUT_JSON = OUT_DIR / "compression.json"
OUT_ST = OUT_DIR / "compression.safetensors"

TENSORS: dict = {}


def put(key, arr):
    """Store a tensor as float32 (C order)."""
    a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
    assert np.all(np.isfinite(a)), key
    assert key not in TENSORS, key
    TENSORS[key] = a
    return a


def randn32(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rel_gap(pruned_max, kept_min):
    """Relative gap between the largest pruned and the smallest kept score."""
    assert kept_min > pruned_max, "tie at a selection boundary"
    return float((kept_min - pruned_max) / max(abs(kept_min), 1e-300))


def floor_k(s, n):
    return int(math.floor(s * n))


# ---------------------------------------------------------------- 1. magnitude
def magnitude_mask(W, s):
    scores = np.abs(W.astype(np.float64)).ravel()
    k = floor_k(s, scores.size)
    order = np.argsort(scores, kind="stable")
    mask = np.ones(scores.size)
    mask[order[:k]] = 0
    gap = rel_gap(scores[order[k - 1]], scores[order[k]]) if 0 < k < scores.size else None
    return mask.reshape(W.shape), k, gap


# ---------------------------------------------------------------- 3. N:M
def nm_mask(W, n=2, m=4):
    """Prune n of every m consecutive input rows, per output column."""
    rows, cols = W.shape
    assert rows % m == 0
    a = np.abs(W.astype(np.float64))
    mask = np.ones_like(a)
    gap = math.inf
    for o in range(cols):
        for g in range(rows // m):
            grp = a[g * m:(g + 1) * m, o]
            order = np.argsort(grp, kind="stable")
            mask[g * m + order[:n], o] = 0
            gap = min(gap, rel_gap(grp[order[n - 1]], grp[order[n]]))
    return mask, gap


# ---------------------------------------------------------------- 5. SparseGPT
def upper_chol_of_inverse(H):
    """torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)."""
    n = H.shape[0]
    L = np.linalg.cholesky(H)                     # H = L L^T
    Linv = np.linalg.solve(L, np.eye(n))          # L^-1 (lower triangular)
    Hi = Linv.T @ Linv                            # H^-1
    Hi = (Hi + Hi.T) / 2                          # exact symmetry (as cholesky_inverse)
    return np.linalg.cholesky(Hi).T               # U with U^T U = H^-1


def sparsegpt_numpy(W_conv1d, X, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """Float64 re-implementation of IST-DASLab sparsegpt.py SparseGPT.fasterprune."""
    W = W_conv1d.astype(np.float64).T.copy()      # nn.Linear layout [out, in]
    rows, cols = W.shape
    Xd = X.astype(np.float64)
    H = Xd.T @ Xd                                 # reference: (2/n) X^T X, same result
    dead = np.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * np.mean(np.diag(H))
    H[np.arange(cols), np.arange(cols)] += damp
    Hinv = upper_chol_of_inverse(H)

    min_gap = math.inf
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].copy()
        Q1 = np.zeros_like(W1)
        Err1 = np.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / np.diag(Hinv1)[None, :] ** 2
            srt = np.sort(tmp.ravel())
            kk = int(tmp.size * sparsity)
            thresh = srt[kk]
            mask1 = tmp <= thresh
            min_gap = min(min_gap, rel_gap(srt[kk], srt[kk + 1]))
        else:
            mask1 = np.zeros(W1.shape, dtype=bool)
        for i in range(count):
            w = W1[:, i].copy()
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:i + prunem] ** 2 / np.diag(Hinv1)[i:i + prunem][None, :] ** 2
                order = np.argsort(tmp, axis=1, kind="stable")
                mask1[np.arange(rows)[:, None], i + order[:, :prunen]] = True
                st = np.take_along_axis(tmp, order, axis=1)
                for r in range(rows):
                    min_gap = min(min_gap, rel_gap(st[r, prunen - 1], st[r, prunen]))
            q = w.copy()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= np.outer(err1, Hinv1[i, i:])
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W.T.copy(), min_gap


def sparsegpt_torch_reference(W_conv1d, X, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01):
    """Line-by-line transcription of the reference fasterprune (torch, float64), incl. its 2/n scaling."""
    import torch
    torch.set_num_threads(1)
    W = torch.tensor(W_conv1d, dtype=torch.float64).t().contiguous()
    rows, columns = W.shape
    inp = torch.tensor(X, dtype=torch.float64).t()
    inp = math.sqrt(2 / X.shape[0]) * inp
    H = inp.matmul(inp.t())
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1 ** 2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i:(i + prunem)] ** 2 / (torch.diag(Hinv1)[i:(i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W.t().numpy().copy()


def rel_recon_error(X, W, Wp):
    Xd = X.astype(np.float64)
    Y = Xd @ W.astype(np.float64)
    Yp = Xd @ Wp.astype(np.float64)
    return float(np.linalg.norm(Y - Yp) / np.linalg.norm(Y))


# ---------------------------------------------------------------- 6. NKP
def rearrange(W, m1, n1, m2, n2):
    assert W.shape == (m1 * m2, n1 * n2)
    return W.reshape(m1, m2, n1, n2).transpose(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def rearrange_loop(W, m1, n1, m2, n2):
    R = np.zeros((m1 * n1, m2 * n2), dtype=W.dtype)
    for a in range(m1):
        for b in range(m2):
            for c in range(n1):
                for d in range(n2):
                    R[a * n1 + c, b * n2 + d] = W[a * m2 + b, c * n2 + d]
    return R


def nkp(W32, m1, n1, m2, n2, terms):
    W = W32.astype(np.float64)
    R = rearrange(W, m1, n1, m2, n2)
    assert np.array_equal(R, rearrange_loop(W, m1, n1, m2, n2))
    U, S, Vt = np.linalg.svd(R, full_matrices=False)
    # Isometry check with random factors: ||W - A⊗B|| == ||R - vec(A) vec(B)^T||.
    rng = np.random.default_rng(999)
    A, B = rng.standard_normal((m1, n1)), rng.standard_normal((m2, n2))
    lhs = np.linalg.norm(W - np.kron(A, B))
    rhs = np.linalg.norm(R - np.outer(A.ravel(), B.ravel()))
    assert abs(lhs - rhs) <= 1e-12 * lhs, (lhs, rhs)
    recons, errors, tails = [], [], []
    recon = np.zeros_like(W)
    for i in range(terms):
        Ai = math.sqrt(S[i]) * U[:, i].reshape(m1, n1)
        Bi = math.sqrt(S[i]) * Vt[i].reshape(m2, n2)
        recon = recon + np.kron(Ai, Bi)
        err = float(np.linalg.norm(W - recon))
        tail = float(math.sqrt(np.sum(S[i + 1:] ** 2)))
        assert abs(err - tail) <= 1e-10 * max(tail, 1.0), (err, tail)
        recons.append(recon.copy())
        errors.append(err)
        tails.append(tail)
    # Independent optimality check: alternating least squares on W directly.
    Wb = W.reshape(m1, m2, n1, n2)                # Wb[a, b, c, d] = W[a*m2+b, c*n2+d]
    A = np.ones((m1, n1))
    for _ in range(500):
        B = np.einsum("ac,abcd->bd", A, Wb) / np.sum(A * A)
        A = np.einsum("bd,abcd->ac", B, Wb) / np.sum(B * B)
    als = np.kron(A, B)
    assert np.max(np.abs(als - recons[0])) <= 1e-9 * np.max(np.abs(W)), np.max(np.abs(als - recons[0]))
    return R, S, recons, errors, tails


# ---------------------------------------------------------------- 8. analysis
def analyze(name, W32):
    W = W32.astype(np.float64)
    s = np.linalg.svd(W, compute_uv=False)
    s2 = s ** 2
    total = float(np.sum(s2))
    fro = float(np.linalg.norm(W))
    assert abs(fro ** 2 - total) <= 1e-10 * total
    cum = np.cumsum(s2)
    eff, margins = {}, []
    for frac in (0.90, 0.99):
        r = int(np.argmax(cum >= frac * total)) + 1
        assert cum[r - 1] >= frac * total and (r == 1 or cum[r - 2] < frac * total)
        margins.append((cum[r - 1] - frac * total) / total)
        if r > 1:
            margins.append((frac * total - cum[r - 2]) / total)
        eff[frac] = r
    spectral = float(s[0])
    return {
        "name": name,
        "shape": list(W.shape),
        "params": int(W.size),
        "nonzero": int(np.count_nonzero(W32)),
        "fro": fro,
        "spectral": spectral,
        "stable_rank": fro ** 2 / spectral ** 2,
        "stable_rank_unsquared": fro / spectral,
        "effective_rank_90": eff[0.90],
        "effective_rank_99": eff[0.99],
        "singular_values": [float(x) for x in s],
    }, min(margins)


def main():
    model = load_file(str(MODEL))

    def weight(name):
        w = model["transformer." + name]
        assert w.dtype == np.float32
        return w

    out = {
        "meta": {
            "generator": "scripts/make_compression_reference.py",
            "source_model": "Tests/Fixtures/tiny-gpt2/model.safetensors",
            "layout": "Conv1D W [in, out], row-major; masks 1 = kept, 0 = pruned",
            "python": platform.python_version(),
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
            "seeds": {"wanda.X": 11, "sparsegpt.X": 12, "nkp.W": 21, "lowrank.W": 31},
        }
    }
    summary = []

    # 1. magnitude, per layer
    fc0 = "h.0.mlp.c_fc.weight"
    W = weight(fc0)
    for key, s in (("magnitude", 0.5), ("magnitude30", 0.3)):
        mask, k, gap = magnitude_mask(W, s)
        put(key + ".mask", mask)
        out[key] = {"layer": fc0, "shape": list(W.shape), "sparsity": s, "k": k,
                    "pruned": int(np.sum(mask == 0)), "realized_sparsity": float(np.mean(mask == 0)),
                    "min_rel_gap": gap}
        summary.append(f"{key}: s={s} k={k} min_rel_gap={gap:.3g}")

    # 2. global magnitude
    gl = ["h.0.attn.c_attn.weight", "h.0.mlp.c_fc.weight", "h.1.mlp.c_proj.weight"]
    mats = [weight(n) for n in gl]
    scores = np.concatenate([np.abs(m.astype(np.float64)).ravel() for m in mats])
    s = 0.6
    k = floor_k(s, scores.size)
    order = np.argsort(scores, kind="stable")
    gmask = np.ones(scores.size)
    gmask[order[:k]] = 0
    gap = rel_gap(scores[order[k - 1]], scores[order[k]])
    per_s, per_n, off = {}, {}, 0
    for n, m in zip(gl, mats):
        part = gmask[off:off + m.size].reshape(m.shape)
        off += m.size
        put("global.mask." + n, part)
        per_s[n] = float(np.mean(part == 0))
        per_n[n] = int(np.sum(part == 0))
    assert sum(per_n.values()) == k
    out["global"] = {"layers": gl, "sparsity": s, "total": int(scores.size), "k": k,
                     "per_layer_sparsity": per_s, "per_layer_pruned": per_n, "min_rel_gap": gap}
    summary.append(f"global: k={k}/{scores.size} per-layer " +
                   ", ".join(f"{n}={v:.4f}" for n, v in per_s.items()))

    # 3. 2:4
    mask, gap = nm_mask(W, 2, 4)
    put("nm24.mask", mask)
    out["nm24"] = {"layer": fc0, "shape": list(W.shape), "n_pruned": 2, "m": 4,
                   "groups": "4 consecutive input rows (4g..4g+3) per output column",
                   "realized_sparsity": float(np.mean(mask == 0)), "min_rel_gap": gap}
    summary.append(f"nm24: sparsity={np.mean(mask == 0)} min_rel_gap={gap:.3g}")

    # 4. Wanda
    fc1 = "h.1.mlp.c_fc.weight"
    Wf = weight(fc1)
    X = put("wanda.X", randn32(11, (96, 16)))
    norms = np.linalg.norm(X.astype(np.float64), axis=0)
    score = np.abs(Wf.astype(np.float64)) * norms[:, None]
    n_in, n_out = Wf.shape
    kk = floor_k(0.5, n_in)
    wmask = np.ones_like(score)
    gap = math.inf
    for o in range(n_out):
        order = np.argsort(score[:, o], kind="stable")
        wmask[order[:kk], o] = 0
        gap = min(gap, rel_gap(score[order[kk - 1], o], score[order[kk], o]))
    put("wanda.mask", wmask)
    out["wanda"] = {"layer": fc1, "shape": list(Wf.shape), "X_shape": list(X.shape), "seed": 11,
                    "sparsity": 0.5, "pruned_per_column": kk, "norms": [float(v) for v in norms],
                    "realized_sparsity": float(np.mean(wmask == 0)), "min_rel_gap": gap}
    summary.append(f"wanda: pruned/column={kk} min_rel_gap={gap:.3g}")

    # 5. SparseGPT
    pj0 = "h.0.mlp.c_proj.weight"
    Wp = weight(pj0)
    Xs = put("sparsegpt.X", randn32(12, (256, 64)))
    cfg = dict(sparsity=0.5, blocksize=32, percdamp=0.01)
    sg, gap_u = sparsegpt_numpy(Wp, Xs, **cfg)
    sg24, gap_24 = sparsegpt_numpy(Wp, Xs, prunen=2, prunem=4, **cfg)
    for res, kw in ((sg, {}), (sg24, dict(prunen=2, prunem=4))):
        ref = sparsegpt_torch_reference(Wp, Xs, **kw, **cfg)
        assert np.array_equal(ref == 0, res == 0), "mask differs from torch transcription"
        dev = np.max(np.abs(ref - res))
        assert dev <= 1e-10 * np.max(np.abs(res)), dev
    sg32 = put("sparsegpt.W", sg)
    sg24_32 = put("sparsegpt24.W", sg24)
    # 2:4 structure check (Conv1D [in, out]: groups of 4 input rows per output column)
    z = (sg24_32 == 0).reshape(16, 4, 16).sum(axis=1)
    assert np.all(z == 2), z
    mag_mask, _, _ = magnitude_mask(Wp, 0.5)
    mag24_mask, _ = nm_mask(Wp, 2, 4)
    mag = (Wp * mag_mask).astype(np.float32)
    mag24 = (Wp * mag24_mask).astype(np.float32)
    errs = {
        "sparsegpt": rel_recon_error(Xs, Wp, sg32),
        "sparsegpt24": rel_recon_error(Xs, Wp, sg24_32),
        "magnitude": rel_recon_error(Xs, Wp, mag),
        "magnitude24": rel_recon_error(Xs, Wp, mag24),
    }
    assert errs["sparsegpt"] < errs["magnitude"] and errs["sparsegpt24"] < errs["magnitude24"]
    out["sparsegpt"] = {
        "layer": pj0, "shape": list(Wp.shape), "layout_inside": "Wt = W.T [out, in] = [16, 64]",
        "X_shape": list(Xs.shape), "seed": 12, **cfg, "prunen_prunem_24": [2, 4],
        "H": "X^T X (reference's 2/n factor omitted; result unchanged)",
        "realized_sparsity": float(np.mean(sg32 == 0)),
        "realized_sparsity_24": float(np.mean(sg24_32 == 0)),
        "min_rel_gap": gap_u, "min_rel_gap_24": gap_24,
        "rel_recon_error": errs,
        "rel_recon_error_definition": "||X W - X W'||_F / ||X W||_F, W' = stored float32 tensor, float64 math",
    }
    summary.append("sparsegpt: sparsity={:.6f} (2:4: {:.6f}); rel errors ".format(
        np.mean(sg32 == 0), np.mean(sg24_32 == 0)) +
        ", ".join(f"{k}={v:.6f}" for k, v in errs.items()) +
        f"; min_rel_gap={gap_u:.3g} (2:4: {gap_24:.3g})")

    # 6. NKP
    Wn = put("nkp.W", randn32(21, (12, 20)))
    R, S, recons, errors, tails = nkp(Wn, 3, 4, 4, 5, terms=2)
    put("nkp.R", R)
    put("nkp.recon1", recons[0])
    put("nkp.recon2", recons[1])
    out["nkp"] = {"shape": [12, 20], "seed": 21, "m1": 3, "n1": 4, "m2": 4, "n2": 5,
                  "R_shape": list(R.shape), "singular_values": [float(v) for v in S],
                  "error1": errors[0], "error2": errors[1], "tail1": tails[0], "tail2": tails[1]}
    summary.append(f"nkp: error1={errors[0]:.6f} error2={errors[1]:.6f} s0={S[0]:.6f}")
    R, S, recons, errors, tails = nkp(W, 4, 8, 4, 8, terms=1)
    put("nkp_fc.R", R)
    put("nkp_fc.recon1", recons[0])
    out["nkp_fc"] = {"layer": fc0, "shape": list(W.shape), "m1": 4, "n1": 8, "m2": 4, "n2": 8,
                     "R_shape": list(R.shape), "singular_values": [float(v) for v in S],
                     "error1": errors[0], "tail1": tails[0],
                     "rel_error1": errors[0] / float(np.linalg.norm(W.astype(np.float64)))}
    summary.append(f"nkp_fc: error1={errors[0]:.6f} (rel {out['nkp_fc']['rel_error1']:.4f})")

    # 7. truncated SVD
    Wl = put("lowrank.W", randn32(31, (30, 20)))
    Wl64 = Wl.astype(np.float64)
    U, S, Vt = np.linalg.svd(Wl64, full_matrices=False)
    r = 5
    W0 = U[:, :r] * np.sqrt(S[:r])
    W1 = Vt[:r].T * np.sqrt(S[:r])
    recon = W0 @ W1.T
    err = float(np.linalg.norm(Wl64 - recon))
    tail = float(math.sqrt(np.sum(S[r:] ** 2)))
    assert abs(err - tail) <= 1e-10 * tail
    put("lowrank.recon", recon)
    out["lowrank"] = {"shape": [30, 20], "seed": 31, "rank": r, "singular_values": [float(v) for v in S],
                      "error": err, "tail": tail, "rel_error": err / float(np.linalg.norm(Wl64))}
    summary.append(f"lowrank: error={err:.6f} tail={tail:.6f}")

    # 8. analysis
    names = ["wte.weight", "wpe.weight"] + [f"h.{i}.{p}.weight" for i in range(2)
                                            for p in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    assert all(("transformer." + n) in model for n in names)
    assert sorted(n for n in model if model[n].ndim == 2) == sorted("transformer." + n for n in names)
    rows, margin = [], math.inf
    for n in names:
        row, m = analyze(n, weight(n))
        rows.append(row)
        margin = min(margin, m)
    block = [row for row in rows if row["name"].startswith("h.")]
    assert len(block) == 8
    sum_sr = sum(row["stable_rank"] for row in block)
    prod_sq = math.prod(row["spectral"] ** 2 for row in block)
    log10_prod = sum(2 * math.log10(row["spectral"]) for row in block)
    out["analysis"] = {
        "model": "Tests/Fixtures/tiny-gpt2",
        "weights": rows,
        "effective_rank_min_margin": margin,
        "totals": {
            "layers": [row["name"] for row in block],
            "params": sum(row["params"] for row in block),
            "nonzero": sum(row["nonzero"] for row in block),
            "sum_stable_rank": sum_sr,
            "log10_prod_spectral_sq": log10_prod,
            "bound_proxy": prod_sq * sum_sr,
            "log10_bound_proxy": log10_prod + math.log10(sum_sr),
        },
    }
    t = out["analysis"]["totals"]
    summary.append(f"analysis: bound_proxy={t['bound_proxy']:.6g} log10={t['log10_bound_proxy']:.6f} "
                   f"sum_stable_rank={sum_sr:.6f} eff-rank margin={margin:.3g}")

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    save_file(TENSORS, str(OUT_ST), metadata={"generator": "scripts/make_compression_reference.py"})
    with open(OUT_JSON, "w") as f:
        json.dump(out, f, indent=1, allow_nan=False)
        f.write("\n")

    # Round-trip check of the written tensors.
    back = load_file(str(OUT_ST))
    assert set(back) == set(TENSORS) and all(np.array_equal(back[k], v) for k, v in TENSORS.items())

    for line in summary:
        print(line)
    print(f"wrote {OUT_JSON.relative_to(ROOT)} ({OUT_JSON.stat().st_size} bytes), "
          f"{OUT_ST.relative_to(ROOT)} ({OUT_ST.stat().st_size} bytes, {len(TENSORS)} tensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
