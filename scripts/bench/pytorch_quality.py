#!/usr/bin/env python3
"""PyTorch + transformers versions of Squeeze's compression methods, on the same teacher, data
and distillation budget as scripts/quality.sh, for a side-by-side table (run by hand, never in CI).

    /work/venv/bin/python scripts/bench/pytorch_quality.py [--methods M ...] [--steps N | --scale X]
        [--threads 2] [--micro-batch 4] [--teacher-ppl PPL] [--json OUT]

Teacher: models/default (GPT-2 6x256, F16 weights, loaded as float32; dropout 0, as Squeeze has
none). Student = a float32 copy of the teacher, compressed, then distilled from the teacher.
Data: data/corpus/{train,valid,test}.txt (run `python3 scripts/fetch_data.py` first), tokenized
with the GPT-2 tokenizer of models/default (train: 2,354,196 tokens, as Squeeze counts them);
the train ids are cached in runs/pytorch_quality/.

Methods (each followed by logit knowledge distillation unless said otherwise):
  dense-kd           no compression, distillation only (the control)
  magnitude-50-kd    torch.nn.utils.prune.l1_unstructured, 50% of every block linear
                     (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj), per matrix; masks fixed
  prune-ofa-50       the same masks grown while distilling (Prune OFA / Zhu & Gupta):
                     s_t = s_f + (s_i - s_f)(1 - t/T_p)^3, s_i = 0, s_f = 0.5, every 10 steps
                     (scaled with --scale/--steps like squeeze --distill-scale),
                     T_p = round(0.6 * steps), then fixed (as recipes/prune-ofa.yaml)
  nm24-kd            2:4 magnitude masks: in every group of 4 consecutive INPUT features of each
                     output keep the 2 largest |w| (HF Conv1D weights are [in, out], so groups
                     run down dim 0), prune.custom_from_mask
  lowrank-half-kd    truncated SVD of every block linear, rank r = floor(0.5*in*out/(in+out)),
                     as Linear(in, r, bias=False) -> Linear(r, out) (one shot; Squeeze's recipe
                     reaches the same rank in 4 progressive steps)
  kronecker-half-kd  nearest sum of Kronecker products (Van Loan-Pitsianis rearrangement + SVD)
                     of every block linear: for each divisor pair m1 | in, n1 | out with
                     two-dimensional factors (m1, n1, in/m1, out/n1 all >= 2; vector factors
                     make it plain low rank), k = the most terms with k(m1 n1 + m2 n2) <= 0.5
                     in*out; the shape with the least Frobenius error wins. The layer rebuilds
                     W = sum_i A_i (x) B_i (one [m1 n1, k] x [k, m2 n2] GEMM) and applies it.
  all-50-kd          the whole model at <= 0.5x non-zeros INCLUDING the token embedding:
                     per-matrix magnitude pruning of wte (tied with lm_head: both share the
                     masked parameter), wpe and every block linear at the sparsity that brings
                     all non-zeros (biases and LayerNorms stay dense) to <= half the teacher's
  magnitude-50-oneshot  the magnitude-50 masks with no distillation (reference)
  q8-rtn, q4-rtn     (one shot, no KD; recipes/q8-rtn.yaml, q4-rtn.yaml) ggml's Q8_0 / Q4_0 round
                     to nearest of the recipes' targets, wte (the tied head) and every block
                     linear: blocks of 32 consecutive weights along the INPUT dimension of each
                     output (down dim 0 of HF's [in, out] Conv1D weights; along the C channels of
                     wte [vocab, C], the head's inputs), one fp16 scale each. Q8_0: d = amax/127,
                     q = roundf(w/d); Q4_0 (quantize_row_q4_0_ref): d = (the signed value of
                     largest |w|, the first one) / -8, q = min(15, trunc(w/d + 8.5)), w' = d (q - 8);
                     1/d from the F32 d, w' from fp16(d). A startup self-check holds both to
                     gguf-py's gguf.quants bytes and dequantized values, bit for bit.
  q4-gptq            (one shot; recipes/q4-gptq.yaml) wte by Q4_0 round to nearest first (Squeeze's
                     Compressor.quantize: GPTQ only applies to block linears), then GPTQ of the
                     block linears on the Q4_0 grid as Squeeze's gptq() (the reference `fasterquant`
                     of IST-DASLab/gptq): the recipe's calibration (128 windows of 256 train tokens
                     at Squeeze's own offsets: xoshiro256** seeded with recipe seed 0 + 0x5EED,
                     offset = next() % (N - 256)) run block by block through the model as quantized
                     so far; H = X^T X of each linear's inputs (float64; the reference's 2/n factor
                     changes nothing), all four of a block's linears from one pass over the block as
                     it stands, then swept; dead inputs zeroed; damping 1% of mean diag; upper
                     Cholesky factor of H^-1; natural column order, lazy blocks of 128; a ggml
                     block's scale by Q4_0's rule from its 32 weights as they stand (error feedback
                     of earlier columns included) when the sweep reaches its first column.
                     Checked against `squeeze compress` (same recipe, --data train.txt --valid
                     valid.txt, as scripts/quality.sh; without --valid Squeeze holds out the end of
                     train.txt and calibrates on other windows): the RTN blocks of q8-rtn and
                     q4-rtn are byte-identical to Squeeze's for all 25 matrices, and GPTQ's grid of
                     block 0 equals Squeeze's value for value; later blocks see HF's float32
                     rounding of the activations instead of Squeeze's kernels' (non-zeros
                     16,370,255 here, 16,370,252 in Squeeze's q4-gptq).
  q4-gptq-kd         q4-gptq, then quantization-aware KD (recipes/q4-gptq-kd.yaml's distill:) as
                     Squeeze's QuantizedComponent: AdamW trains F32 masters; each step's forward
                     runs on the grid (GPTQ's while the masters sit exactly on it, otherwise the
                     masters re-quantized by ggml's rule, scales recomputed per block) and the
                     grid's gradients go to the masters unchanged (straight-through estimator);
                     the final masters' grid is what is evaluated (what Squeeze saves).

Distillation (Squeeze's Trainer): per step a global batch of 16 windows of 257 tokens from
train.txt at offsets drawn by Squeeze's own sampler (xoshiro256** seeded with
seed + step * 0x9E3779B97F4A7C15, offset = next() % (N - T - 1), seed 1234), so the windows are the
very ones Squeeze trains on; micro-batches of 4 sequences accumulate gradients. Loss per token
    alpha * T^2 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) * CE(z_s, y)
averaged over the 16 x 256 tokens. AdamW (torch.optim.AdamW, betas (0.9, 0.95), eps 1e-8,
weight decay on matrices only), global gradient-norm clip 1.0, lr linear warmup
lr*(s+1)/warmup then cosine to 0.1 x lr. steps, batch, seq, lr, warmup, temperature, alpha,
weight_decay and micro_batch come from the first `distill:` block of the recipe named per method
(METHODS below); --scale multiplies steps and warmup as `squeeze compress --distill-scale` does,
--steps N sets steps (warmup = min(warmup, N)).

Evaluation (Squeeze's `eval` rule = HF's perplexity guide with stride = context): windows of
n_positions (256) tokens with stride 256 over the whole file, each token scored once (the first
token of each window has no context and is not scored): test.txt = 114,604 scored tokens.
Validation after distillation: the first 65,537 tokens of valid.txt (Squeeze's eval_tokens).

Cost on the project's 2-core machine (measured with the cores shared, load average 5-11): one
step of 16 x 256 tokens took 50-81 s (58-118 tokens/s), 11 s at the best moment seen, so the full
400 steps take from ~1.2 h (idle machine) to ~7 h per method; test evaluation ~340 s loaded.
--steps 5 --eval-max-tokens 10240 runs every method in ~40 min (a smoke test). Quantization (2
threads, load average 9-10): round to nearest under a second; q4-gptq's calibration and sweeps
~6-7 min (each block's Grams re-run the windows through the blocks before it: 15-57 s; sweeps
20-50 s per block, float64); a test evaluation 550-740 s; a QAT step ~125 s. --teacher-ppl skips
the teacher's evaluation when it is known (118.477 for models/default on all of test.txt).

Reported per method: block-linear weight parameters stored (non-zeros of pruned matrices, factor
sizes of factored ones), all parameters stored, non-zeros of the whole model (embedding
included; tied weights counted once), bytes as Squeeze's storedSize counts them (quantized
matrices as ggml blocks: Q4_0 18 bytes and Q8_0 34 bytes per 32 weights; every other stored
value F32, 4 bytes; a pruning mask 1 bit per weight), test perplexity and its ratio to the
teacher and to the dense control, validation perplexity, KD tokens/s (16*256*steps /
distillation time) and wall time (compression + distillation + evaluations).
"""

import argparse
import hashlib
import json
import math
import os
import platform
import re
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import transformers
from torch.nn.utils import prune
from transformers import GPT2LMHeadModel, GPT2TokenizerFast
from transformers.utils import logging as hf_logging

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
SAMPLER_SEED = 1234          # DistillSettings.seed default (no recipe sets it)
EVAL_TOKENS = 65536          # DistillSettings.evalTokens default: validation prefix
EVAL_BATCH = 4               # `squeeze eval --batch 4` in scripts/quality.sh
BETAS, EPS, MIN_LR_RATIO, GRAD_CLIP = (0.9, 0.95), 1e-8, 0.1, 1.0
OFA = {"initial": 0.0, "final": 0.5, "frequency": 10, "end": 0.6}   # recipes/prune-ofa.yaml

# method -> (recipe whose distill: settings it uses, one-line description)
METHODS = {
    "dense-kd": ("dense-control.yaml", "no compression, KD only (control)"),
    "magnitude-50-oneshot": (None, "50% magnitude per block linear, no KD"),
    "magnitude-50-kd": ("prune-ofa.yaml", "50% magnitude per block linear (l1_unstructured), fixed masks + KD"),
    "prune-ofa-50": ("prune-ofa.yaml", "50% magnitude, cubic schedule every 10 steps to 60% of steps, + KD"),
    "nm24-kd": ("nm24-kd.yaml", "2:4 magnitude (2 of 4 consecutive inputs per output) + KD"),
    "lowrank-half-kd": ("lowrank-half.yaml", "truncated SVD, r = floor(0.5 in out/(in+out)), + KD"),
    "kronecker-half-kd": ("kronecker-half.yaml", "nearest sum of Kronecker products, <= 0.5x params, + KD"),
    "all-50-kd": ("whole-half.yaml", "magnitude pruning of wte, wpe and block linears to <= 0.5x non-zeros overall, + KD"),
    "q8-rtn": (None, "Q8_0 round to nearest of wte (tied head) and every block linear, no KD"),
    "q4-rtn": (None, "Q4_0 round to nearest of wte (tied head) and every block linear, no KD"),
    "q4-gptq": (None, "Q4_0 by GPTQ on the block linears (sequential calibration), wte round to nearest, no KD"),
    "q4-gptq-kd": ("q4-gptq-kd.yaml", "q4-gptq, then quantization-aware KD (straight-through, F32 masters), on the grid"),
}
# quantization method -> (recipe it mirrors, ggml format, method of the block linears)
QUANT = {
    "q8-rtn": ("q8-rtn.yaml", "q8_0", "rtn"),
    "q4-rtn": ("q4-rtn.yaml", "q4_0", "rtn"),
    "q4-gptq": ("q4-gptq.yaml", "q4_0", "gptq"),
    "q4-gptq-kd": ("q4-gptq-kd.yaml", "q4_0", "gptq"),
}
QK = 32                                          # ggml's block: 32 weights, one fp16 scale
BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}
GPTQ_BLOCKSIZE, GPTQ_PERCDAMP = 128, 0.01        # Recipe.QuantizeSpec defaults (no recipe sets them)
CALIBRATION_SEED = 0 + 0x5EED                    # Compressor.calibrationBatches: recipe seed 0 &+ 0x5EED
DEFAULT_METHODS = ["dense-kd", "magnitude-50-kd", "prune-ofa-50", "nm24-kd", "lowrank-half-kd", "kronecker-half-kd", "all-50-kd"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- settings
def recipe_distill(name):
    """The first stage's `distill:` mapping of recipes/NAME (flow-style YAML, one line)."""
    text = open(os.path.join(ROOT, "recipes", name)).read()
    m = re.search(r"distill:\s*\{([^}]*)\}", text)
    if not m:
        raise SystemExit(f"recipes/{name}: no distill: block")
    out = {}
    for item in m.group(1).split(","):
        k, v = (s.strip() for s in item.split(":", 1))
        out[k] = float(v) if re.search(r"[.eE]", v) else int(v)
    return out


def recipe_calibration(name):
    """recipes/NAME's `calibration: {samples, seq}` (Squeeze's defaults when absent)."""
    text = open(os.path.join(ROOT, "recipes", name)).read()
    m = re.search(r"calibration:\s*\{([^}]*)\}", text)
    out = {"samples": 64, "seq": 128}             # Recipe.Calibration defaults
    if m:
        for item in m.group(1).split(","):
            k, v = (x.strip() for x in item.split(":", 1))
            out[k] = int(v)
    return out


def distill_settings(method, args):
    recipe = METHODS[method][0]
    if recipe is None:
        return None
    d = recipe_distill(recipe)
    d.setdefault("micro_batch", 4)
    d.setdefault("warmup", max(1, d["steps"] // 20))
    d["recipe"] = f"recipes/{recipe}"
    d["recipe_steps"] = d["steps"]
    if args.steps is not None:
        d["steps"] = args.steps
        d["warmup"] = min(d["warmup"], args.steps)
    elif args.scale != 1:
        s = max(1, round(d["steps"] * args.scale))
        d["warmup"] = min(s, round(d["warmup"] * args.scale))
        d["steps"] = s
    if args.micro_batch:
        d["micro_batch"] = args.micro_batch
    return d


def lr_at(step, d):
    """Squeeze's LRSchedule: linear warmup to lr, then cosine to MIN_LR_RATIO * lr."""
    lr, warmup, total = d["lr"], d["warmup"], d["steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


# ----------------------------------------------------------------------------- data
def tokenize(tok, path, cache_dir):
    """Token ids of a text file (train.txt's ~18 s of tokenizing is cached, keyed by content)."""
    raw = open(path, "rb").read()
    key = hashlib.sha256(raw).hexdigest()[:16]
    cache = os.path.join(cache_dir, f"{os.path.basename(path)}-{key}.npy")
    if os.path.exists(cache):
        return np.load(cache)
    ids = np.asarray(tok(raw.decode("utf-8"))["input_ids"], dtype=np.int64)
    os.makedirs(cache_dir, exist_ok=True)
    np.save(cache, ids)
    return ids


M64 = (1 << 64) - 1


class SqueezeSampler:
    """Squeeze's BatchSampler: the global batch of step s starts at offsets drawn by xoshiro256**
    (splitmix64-seeded with seed + s * 0x9E3779B97F4A7C15), offset = next() % (N - T - 1)."""

    def __init__(self, tokens, T, seed):
        self.tokens, self.T, self.seed = torch.from_numpy(tokens), T, seed

    @staticmethod
    def _rng(seed):
        z = seed & M64
        state = []
        for _ in range(4):
            z = (z + 0x9E3779B97F4A7C15) & M64
            x = z
            x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
            x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
            state.append(x ^ (x >> 31))
        return SqueezeSampler._xoshiro(state)

    @staticmethod
    def _xoshiro(state):
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64
        while True:
            s0, s1, s2, s3 = state
            result = (rotl((s1 * 5) & M64, 7) * 9) & M64
            t = (s1 << 17) & M64
            s2 ^= s0
            s3 ^= s1
            s1 ^= s2
            s0 ^= s3
            s2 ^= t
            s3 = rotl(s3, 45)
            state = [s0, s1, s2, s3]
            yield result

    def starts(self, step, batch):
        g = self._rng(self.seed + step * 0x9E3779B97F4A7C15)
        span = len(self.tokens) - self.T - 1
        return [next(g) % span for _ in range(batch)]

    def batch(self, starts):
        w = torch.stack([self.tokens[s:s + self.T + 1] for s in starts])
        return w[:, :-1], w[:, 1:]


@torch.no_grad()
def perplexity(model, tokens, context, stride=None, batch=EVAL_BATCH):
    """Squeeze's evaluatePerplexity (HF's sliding-window guide): windows [b, e) of `context`
    tokens every `stride`; position p predicts p+1, labels before max(previous end, b+1) skipped."""
    stride = stride or context
    model.eval()
    ids = torch.as_tensor(tokens)
    n = len(ids)
    windows, prev_end, begin = [], 0, 0
    while begin < n:
        end = min(begin + context, n)
        windows.append((begin, end, max(prev_end, begin + 1)))
        prev_end = end
        if end == n:
            break
        begin += stride
    nll, scored, i = 0.0, 0, 0
    while i < len(windows):
        length = windows[i][1] - windows[i][0]
        group = [windows[i]]
        j = i + 1
        while j < len(windows) and len(group) < batch and windows[j][1] - windows[j][0] == length:
            group.append(windows[j])
            j += 1
        x = torch.stack([ids[b:e] for b, e, _ in group])
        labels = torch.full_like(x, -100)
        for r, (b, e, first) in enumerate(group):
            labels[r, :length - 1] = ids[b + 1:e]           # position p predicts token b + p + 1
            labels[r, :max(first - b - 1, 0)] = -100         # labels before `first` are not scored
        logits = model(x).logits.float()
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum").item()
        scored += int((labels != -100).sum())
        i = j
    return math.exp(nll / scored), scored


# ----------------------------------------------------------------------------- models and counting
def load_model(model_dir):
    """float32 GPT2LMHeadModel (F16 on disk), dropout off (Squeeze's model has none)."""
    m = GPT2LMHeadModel.from_pretrained(model_dir, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return m.float()


def block_linears(model):
    """(name, parent module, attribute) of every block linear."""
    out = []
    for i, block in enumerate(model.transformer.h):
        for path in BLOCK_LINEARS:
            parent_name, attr = path.split(".")
            out.append((f"h.{i}.{path}", getattr(block, parent_name), attr))
    return out


def effective_tensors(model, quantized=None):
    """{name: (tensor as used in the forward, stored values, stored bytes)} with each underlying
    parameter once (pruned weights as weight_orig * mask, storing the mask's ones; tied weights
    under their first name). Bytes as Squeeze's storedSize counts them: ggml blocks for the
    parameters in `quantized` ({id(parameter): format}: 34 or 18 bytes per 32 weights), 4 bytes
    per stored value (F32) otherwise, plus one bit per weight for a pruning mask."""
    quantized = quantized or {}
    seen, out = set(), {}
    for mname, mod in model.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if pname.endswith("_orig"):
                base = pname[:-5]
                mask = getattr(mod, base + "_mask")
                kept = int(mask.sum())
                out[f"{mname}.{base}"] = ((p * mask).detach(), kept, 4 * kept + (mask.numel() + 7) // 8)
            else:
                size = BLOCK_BYTES[quantized[id(p)]] * p.numel() // QK if id(p) in quantized else 4 * p.numel()
                out[f"{mname}.{pname}" if mname else pname] = (p.detach(), p.numel(), size)
    return out


def counts(model, quantized=None):
    """params: all scalars stored (dense shapes, as Squeeze's "all params stored"); nonzero:
    non-zero values of the whole model; block_linear_params: stored block-linear weights
    (kept entries of pruned ones, factor sizes of factored ones; biases excluded); bytes: the
    whole model's stored bytes (effective_tensors)."""
    t = effective_tensors(model, quantized)
    params = sum(v.numel() for v, _, _ in t.values())
    nonzero = sum(int(torch.count_nonzero(v)) for v, _, _ in t.values())
    lin = sum(stored for k, (_, stored, _) in t.items()
              if ".h." in f".{k}" and any(f".{b}." in k for b in BLOCK_LINEARS) and not k.endswith("bias"))
    return {"params": params, "nonzero": nonzero, "block_linear_params": lin, "bytes": sum(b for _, _, b in t.values())}


# ----------------------------------------------------------------------------- compression
def prune_block_linears(model, sparsity):
    for _, parent, attr in block_linears(model):
        mod = getattr(parent, attr)
        prune.l1_unstructured(mod, "weight", amount=int(math.floor(sparsity * mod.weight.numel())))


def reprune_block_linears(model, sparsity):
    """Magnitude masks at `sparsity` over the current (already masked) weights: remove the old
    reparametrisation (same Parameter object, so AdamW's state stays attached) and prune again."""
    for _, parent, attr in block_linears(model):
        mod = getattr(parent, attr)
        if prune.is_pruned(mod):
            prune.remove(mod, "weight")
        prune.l1_unstructured(mod, "weight", amount=int(math.floor(sparsity * mod.weight.numel())))


def nm_mask(w, n=2, m=4):
    """[in, out] weight: in each group of m consecutive inputs of every output column keep the n largest |w|."""
    rows, cols = w.shape
    g = w.abs().reshape(rows // m, m, cols)
    keep = torch.zeros_like(g)
    keep.scatter_(1, g.topk(n, dim=1).indices, 1.0)
    return keep.reshape(rows, cols)


def prune_nm(model, n=2, m=4):
    for _, parent, attr in block_linears(model):
        mod = getattr(parent, attr)
        prune.custom_from_mask(mod, "weight", nm_mask(mod.weight.detach(), n, m))


def prune_all(model):
    """Per-matrix magnitude pruning of wte (and the tied lm_head), wpe and every block linear at
    the one sparsity that puts the whole model's non-zeros at <= half of its parameters."""
    before = counts(model)
    mods = [model.transformer.wte, model.transformer.wpe] + [getattr(p, a) for _, p, a in block_linears(model)]
    sizes = [m.weight.numel() for m in mods]
    dense_rest = before["params"] - sum(sizes)                # biases and LayerNorms
    sparsity = 1 - (0.5 * before["params"] - dense_rest) / sum(sizes)
    while sum(n - math.floor(sparsity * n) for n in sizes) + dense_rest > 0.5 * before["params"]:
        sparsity += 1e-7                                       # floor() rounding: prune a few more
    tied = model.lm_head.weight is model.transformer.wte.weight
    for mod in mods:
        prune.l1_unstructured(mod, "weight", amount=int(math.floor(sparsity * mod.weight.numel())))
    if tied:   # lm_head applies the same mask to the same (now weight_orig) parameter
        prune.custom_from_mask(model.lm_head, "weight", model.transformer.wte.weight_mask.clone())
    return sparsity


class LowRankLinear(nn.Sequential):
    pass


def lowrank(model, fraction=0.5):
    shapes = {}
    for name, parent, attr in block_linears(model):
        conv = getattr(parent, attr)
        w = conv.weight.detach().double()            # [in, out]
        n_in, n_out = w.shape
        r = int(math.floor(fraction * n_in * n_out / (n_in + n_out)))
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        root = S[:r].sqrt()
        first = nn.Linear(n_in, r, bias=False)
        second = nn.Linear(r, n_out, bias=True)
        with torch.no_grad():
            first.weight.copy_((U[:, :r] * root).T.float())      # x @ U_r sqrt(S)
            second.weight.copy_((root[:, None] * Vh[:r]).T.float())
            second.bias.copy_(conv.bias.detach())
        setattr(parent, attr, LowRankLinear(first, second))
        shapes[name] = {"rank": r, "relative_error": float(S[r:].square().sum().sqrt() / S.square().sum().sqrt())}
    return shapes


class KroneckerLinear(nn.Module):
    """y = x W + b with W [m1 m2, n1 n2] = sum_i A_i (x) B_i (HF [in, out] layout), rebuilt per
    forward from the rearranged product R = vec(A)^T vec(B) [m1 n1, m2 n2]: one small GEMM plus
    a permutation, then a dense matmul (cheaper than k per-token Kronecker products)."""

    def __init__(self, A, B, bias):
        super().__init__()
        self.A = nn.Parameter(A)   # [k, m1, n1]
        self.B = nn.Parameter(B)   # [k, m2, n2]
        self.bias = nn.Parameter(bias)

    def weight_matrix(self):
        k, m1, n1 = self.A.shape
        _, m2, n2 = self.B.shape
        R = self.A.reshape(k, m1 * n1).T @ self.B.reshape(k, m2 * n2)
        return R.reshape(m1, n1, m2, n2).permute(0, 2, 1, 3).reshape(m1 * m2, n1 * n2)

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight_matrix()).reshape(*x.shape[:-1], -1)


def rearrange(w, m1, n1):
    """Van Loan-Pitsianis R(W) [m1 n1, m2 n2]: R[a n1 + c, b n2 + d] = W[a m2 + b, c n2 + d]."""
    rows, cols = w.shape
    m2, n2 = rows // m1, cols // n1
    return w.reshape(m1, m2, n1, n2).permute(0, 2, 1, 3).reshape(m1 * n1, m2 * n2)


def kronecker_shape(w, fraction):
    """Least-error (m1, n1, k) with two-dimensional factors and k(m1 n1 + m2 n2) <= fraction in out."""
    rows, cols = w.shape
    budget = int(fraction * rows * cols)
    total = w.square().sum().item()
    best = None
    for m1 in (d for d in range(2, rows // 2 + 1) if rows % d == 0):
        for n1 in (d for d in range(2, cols // 2 + 1) if cols % d == 0):
            m2, n2 = rows // m1, cols // n1
            k = min(budget // (m1 * n1 + m2 * n2), m1 * n1, m2 * n2)
            if k < 1:
                continue
            s = torch.linalg.svdvals(rearrange(w, m1, n1))
            err = math.sqrt(max(total - s[:k].square().sum().item(), 0.0) / total)
            if best is None or err < best[3]:
                best = (m1, n1, k, err)
    return best


def kronecker(model, fraction=0.5):
    shapes = {}
    for name, parent, attr in block_linears(model):
        conv = getattr(parent, attr)
        w = conv.weight.detach().double()
        m1, n1, k, err = kronecker_shape(w, fraction)
        m2, n2 = w.shape[0] // m1, w.shape[1] // n1
        U, S, Vh = torch.linalg.svd(rearrange(w, m1, n1), full_matrices=False)
        root = S[:k].sqrt()
        A = (U[:, :k] * root).T.reshape(k, m1, n1).float()
        B = (root[:, None] * Vh[:k]).reshape(k, m2, n2).float()
        setattr(parent, attr, KroneckerLinear(A, B, conv.bias.detach().clone()))
        shapes[name] = {"A": [m1, n1], "B": [m2, n2], "terms": k, "params": k * (m1 * n1 + m2 * n2),
                        "dense_params": w.numel(), "relative_error": err}
        log(f"  {name}: [{m1}x{n1}] (x) [{m2}x{n2}] x {k} terms = {k * (m1 * n1 + m2 * n2):,} of {w.numel():,} params, rel. error {err:.3f}")
    return shapes


# ----------------------------------------------------------------------------- quantization
# ggml's Q8_0 / Q4_0 reference rules (ggml-quants.c quantize_row_q8_0_ref / q4_0_ref), in F32,
# on blocks of 32 along the last dimension; check_quantizers() holds them to gguf-py bit for bit.
def roundf(x):
    """C's roundf (half away from zero), exactly, as gguf-py's np_roundf (torch.round is half-even)."""
    a = x.abs()
    f = a.floor()
    return torch.sign(x) * (f + (2 * (a - f)).floor())


def block_scale(x, fmt):
    """The F32 scale d of each block x[..., 32] (before its fp16 rounding)."""
    if fmt == "q8_0":
        return x.abs().amax(dim=-1, keepdim=True) / 127
    imax = x.abs().argmax(dim=-1, keepdim=True)          # the first of largest |x| (ggml's strict <)
    return x.gather(-1, imax) / -8                       # signed max / -8


def block_codes(x, d, fmt):
    """Stored codes of x[..., 32] for F32 scales d[..., 1]: id = 1/d (0 when d = 0)."""
    inv = torch.where(d == 0, torch.zeros_like(d), 1 / d)
    if fmt == "q8_0":
        return roundf(x * inv).clamp(-128, 127)
    return torch.trunc(x * inv + 8.5).clamp(0, 15)       # (int8_t)(x id + 8.5), min 15


def block_values(q, d, fmt):
    """What the codes stand for: fp16(d) widened, times q (Q8_0) or q - 8 (Q4_0), in F32."""
    return d.half().float() * (q if fmt == "q8_0" else q - 8)


def quantize_rows(x, fmt):
    """x [..., n] (n a multiple of 32) on the grid: blocks of 32 consecutive values of the last dim."""
    b = x.float().reshape(-1, QK)
    d = block_scale(b, fmt)
    return block_values(block_codes(b, d, fmt), d, fmt).reshape(x.shape)


def fake_quant(w, fmt, axis):
    """w on the grid with blocks running along `axis` (0: HF Conv1D [in, out], blocks down each
    output's inputs; 1: the embedding [vocab, C], blocks along each row's channels)."""
    return quantize_rows(w.T, fmt).T.contiguous() if axis == 0 else quantize_rows(w, fmt)


def ggml_bytes(x, fmt):
    """x [n] as ggml's block bytes (fp16 d, then 32 int8 codes or 16 bytes of nibbles j | j+16 << 4)."""
    b = x.float().reshape(-1, QK)
    d = block_scale(b, fmt)
    q = block_codes(b, d, fmt).to(torch.int64)
    dh = d.half().numpy().view(np.uint8)
    if fmt == "q8_0":
        qs = q.to(torch.int8).numpy().view(np.uint8)
    else:
        qs = (q[:, :16] | (q[:, 16:] << 4)).to(torch.uint8).numpy()
    return np.concatenate([dh, qs], axis=1)


def check_quantizers(teacher):
    """Startup self-check: bytes and dequantized values equal gguf-py's (gguf.quants) on random
    blocks (with ties, zeros, a block of zeros) and on the teacher's wte and first c_attn."""
    import gguf
    from gguf import GGMLQuantizationType as G
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4096, 32, generator=g) * torch.logspace(-4, 1, 4096)[:, None]
    r[0] = 0
    r[1, :] = 0.5
    r[2, 3], r[2, 7] = -3.0, 3.0            # |max| tie of opposite signs: the first wins
    r[3] = torch.round(r[3] * 4) / 4         # exact halves for the rounding rule
    samples = {"random": r.reshape(-1),
               "wte": teacher.transformer.wte.weight.detach()[:4096].reshape(-1),
               "h.0.attn.c_attn": teacher.transformer.h[0].attn.c_attn.weight.detach().T.reshape(-1)}
    for fmt, qt in (("q8_0", G.Q8_0), ("q4_0", G.Q4_0)):
        for name, x in samples.items():
            x = x.float().contiguous()
            ref = gguf.quants.quantize(x.numpy().reshape(-1, 256), qt)
            mine = ggml_bytes(x, fmt).reshape(ref.shape)
            back = gguf.quants.dequantize(ref, qt).reshape(-1)
            if not np.array_equal(ref, mine) or not np.array_equal(back, quantize_rows(x, fmt).numpy()):
                raise SystemExit(f"quantizer self-check failed: {fmt} on {name} differs from gguf-py {gguf.__name__}")
    log(f"quantizers: Q8_0 and Q4_0 bit-exact with gguf-py (gguf.quants) on {sum(v.numel() for v in samples.values()):,} values")


def quant_targets(model):
    """(name, parameter, blocks axis) of the recipes' targets: wte (the tied head; blocks along its
    C channels, the head's inputs) and every block linear (blocks down the inputs of [in, out])."""
    out = [("wte", model.transformer.wte.weight, 1)]
    for name, parent, attr in block_linears(model):
        out.append((name, getattr(parent, attr).weight, 0))
    return out


def rtn(model, fmt, names=None):
    with torch.no_grad():
        for name, p, axis in quant_targets(model):
            if names is None or name in names:
                p.copy_(fake_quant(p, fmt, axis))


class _Stop(Exception):
    pass


def calibration_windows(train, samples, seq):
    """Compressor.calibrationBatches: `samples` windows of `seq` train tokens starting at
    next() % (N - seq) of xoshiro256** seeded (splitmix64) with recipe seed 0 &+ 0x5EED."""
    g = SqueezeSampler._rng(CALIBRATION_SEED)
    starts = [next(g) % (len(train) - seq) for _ in range(samples)]
    return torch.stack([torch.from_numpy(train[s:s + seq]) for s in starts])


def gptq_q4(w, H, fmt="q4_0", blocksize=GPTQ_BLOCKSIZE, percdamp=GPTQ_PERCDAMP):
    """GPTQ (IST-DASLab gptq `fasterquant`, natural column order) of w [in, out] with Hessian
    H [in, in] (float64) onto ggml's blocks, as Squeeze's gptq(): the sweep in float64 over the
    [out, in] view; dead inputs (H_jj = 0) zeroed with H_jj = 1; H += percdamp * mean diag; the
    upper Cholesky factor of H^-1; lazy blocks of `blocksize` columns. A ggml block's scale is
    ggml's rule on its 32 weights (rounded to F32) as they stand, error feedback included, when
    the sweep reaches its first column; each weight's code from the F32 weight and 1/d, its value
    fp16(d) * code. Returns the grid weight [in, out] (F32)."""
    W = w.detach().double().T.clone()                 # [out, in]
    n = W.shape[1]
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.diag(H).mean() * torch.eye(n, dtype=H.dtype)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros_like(W[:, i1:i2]), Hinv[i1:i2, i1:i2]
        for c in range(i2 - i1):
            if (i1 + c) % QK == 0:
                d = block_scale(W1[:, c:c + QK].float(), fmt)          # [out, 1]
            w_c = W1[:, c]
            q = block_values(block_codes(w_c.float()[:, None], d, fmt), d, fmt)[:, 0].double()
            Q[:, i1 + c] = q
            err = (w_c - q) / Hinv1[c, c]
            W1[:, c:] -= err[:, None] * Hinv1[c, c:][None, :]
            Err1[:, c] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q.T.float().contiguous()


@torch.no_grad()
def gptq_model(model, fmt, calib, micro=16):
    """Squeeze's calibrate + gptqCalibrated: block by block, the windows run through the model as
    compressed so far (the embedding already on its grid; blocks < l already quantized); the Gram
    matrices X^T X of block l's four linears' inputs are accumulated in float64 in one pass over
    the block as it stands, then each linear is swept, then block l's outputs feed block l+1."""
    model.eval()
    info = {}
    for l, block in enumerate(model.transformer.h):
        mods = {f"h.{l}.{p}": getattr(getattr(block, p.split(".")[0]), p.split(".")[1]) for p in BLOCK_LINEARS}
        grams = {k: torch.zeros(m.weight.shape[0], m.weight.shape[0], dtype=torch.float64) for k, m in mods.items()}
        handles = []
        for k, m in mods.items():
            def pre(mod, args, k=k):
                x = args[0].reshape(-1, args[0].shape[-1]).double()
                grams[k].addmm_(x.T, x)
            handles.append(m.register_forward_pre_hook(pre))

        def stop(mod, args, out):
            raise _Stop()
        handles.append(block.register_forward_hook(stop))
        t0 = time.perf_counter()
        for i in range(0, len(calib), micro):
            try:
                model.transformer(calib[i:i + micro])
            except _Stop:
                pass
        for h in handles:
            h.remove()
        t1 = time.perf_counter()
        for k, m in mods.items():
            m.weight.copy_(gptq_q4(m.weight, grams[k], fmt))
        info[f"h.{l}"] = {"calibration_s": t1 - t0, "sweep_s": time.perf_counter() - t1}
        log(f"  gptq block {l}: grams {t1 - t0:.1f} s, sweeps {time.perf_counter() - t1:.1f} s")
    return info


class GridTrainer:
    """Quantization-aware distillation as Squeeze's QuantizedComponent: the F32 masters are what
    AdamW trains; every step's forward runs on the grid (kept while the masters sit exactly on it,
    else ggml's rule on the masters, per-block scales recomputed), and the grid's gradients go to
    the masters unchanged (straight-through estimator). The model's own parameters hold the grid."""

    def __init__(self, model, fmt):
        self.fmt, self.entries = fmt, []
        for name, p, axis in quant_targets(model):
            self.entries.append({"name": name, "param": p, "axis": axis,
                                 "master": nn.Parameter(p.detach().clone()), "grid": p.detach().clone()})
        self.by_param = {id(e["param"]): e["master"] for e in self.entries}

    def masters_for(self, params):
        return [self.by_param.get(id(p), p) for p in params]

    @torch.no_grad()
    def load_grid(self):
        for e in self.entries:
            if not torch.equal(e["master"], e["grid"]):
                e["grid"] = fake_quant(e["master"], self.fmt, e["axis"])
            e["param"].copy_(e["grid"])

    def pass_gradients(self):
        for e in self.entries:
            e["master"].grad, e["param"].grad = e["param"].grad, None


# ----------------------------------------------------------------------------- distillation
def distill(student, teacher, sampler, d, hook=None, label="", grid=None):
    """Squeeze's Trainer loop; returns (seconds in steps, last step's loss terms). With `grid` (a
    GridTrainer) AdamW trains its F32 masters through the quantizer; the model ends on the grid."""
    V = student.config.vocab_size
    T, batch, mb = d["seq"], d["batch"], d["micro_batch"]
    tau, alpha = d["temperature"], d["alpha"]
    # Deduplicate (tied wte/lm_head) and split decayed matrices from biases/LayerNorm.
    seen, decay, no_decay = set(), [], []
    for p in student.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            (decay if p.dim() >= 2 else no_decay).append(p)
    if grid is not None:
        decay = grid.masters_for(decay)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": d["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=d["lr"], betas=BETAS, eps=EPS)
    params = decay + no_decay
    teacher.eval()
    student.train()
    step_time, last = 0.0, {}
    for step in range(d["steps"]):
        if hook:
            hook(step)
        t0 = time.perf_counter()
        lr = lr_at(step, d)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        if grid is not None:
            grid.load_grid()
        starts = sampler.starts(step, batch)
        kd_sum = ce_sum = 0.0
        for c in range(0, batch, mb):
            x, y = sampler.batch(starts[c:c + mb])
            with torch.no_grad():
                zt = teacher(x).logits.reshape(-1, V)
            zs = student(x).logits.reshape(-1, V)
            ce = F.cross_entropy(zs, y.reshape(-1), reduction="sum")
            if alpha > 0:
                kd = alpha * tau * tau * F.kl_div(F.log_softmax(zs / tau, dim=-1), F.log_softmax(zt / tau, dim=-1),
                                                  log_target=True, reduction="sum")
                loss = kd + (1 - alpha) * ce
            else:
                kd, loss = torch.zeros(()), ce
            (loss / (batch * T)).backward()
            kd_sum += kd.item()
            ce_sum += ce.item()
        if grid is not None:
            grid.pass_gradients()
        norm = torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        if not math.isfinite(norm.item()):
            raise SystemExit(f"{label}: non-finite gradient norm at step {step + 1}")
        opt.step()
        dt = time.perf_counter() - t0
        step_time += dt
        n = batch * T
        last = {"step": step + 1, "loss": kd_sum / n + (1 - alpha) * ce_sum / n, "kd": kd_sum / n, "ce": ce_sum / n,
                "lr": lr, "grad_norm": norm.item()}
        if step == 0 or (step + 1) % 10 == 0 or step + 1 == d["steps"]:
            log(f"  {label} step {step + 1}/{d['steps']}  loss {last['loss']:.4f}  kd {last['kd']:.4f}  ce {last['ce']:.4f}  "
                f"lr {lr:.2e}  |g| {last['grad_norm']:.2f}  {n / dt:.0f} tok/s (step {dt:.1f} s)")
    if grid is not None:
        grid.load_grid()            # the final masters' grid: what Squeeze saves and evaluates
    return step_time, last


# ----------------------------------------------------------------------------- driver
def run_method(method, args, teacher, data, teacher_ppl):
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    d = distill_settings(method, args)
    student = load_model(args.model)
    info = {"method": method, "description": METHODS[method][1], "distill": d}
    log(f"==> {method}: {METHODS[method][1]}")
    hook = grid = None
    quantized = {}
    if method in ("magnitude-50-kd", "magnitude-50-oneshot"):
        prune_block_linears(student, 0.5)
    elif method == "prune-ofa-50":
        prune_steps = max(0, min(d["steps"] - 1, round(OFA["end"] * d["steps"])))
        # --scale compresses the whole schedule, as squeeze's --distill-scale: the interval too.
        frequency = max(1, round(OFA["frequency"] * d["steps"] / d["recipe_steps"]))
        state = {"last": -1.0}
        info["schedule"] = dict(OFA, prune_steps=prune_steps, frequency=frequency)

        def hook(step):
            if step > prune_steps or not (step % frequency == 0 or step == prune_steps):
                return
            s = OFA["final"] + (OFA["initial"] - OFA["final"]) * (1 - (step / prune_steps if prune_steps else 1)) ** 3
            if s != state["last"]:
                state["last"] = s
                reprune_block_linears(student, s)
    elif method == "nm24-kd":
        prune_nm(student, 2, 4)
    elif method == "lowrank-half-kd":
        info["layers"] = lowrank(student, 0.5)
    elif method == "kronecker-half-kd":
        info["layers"] = kronecker(student, 0.5)
    elif method == "all-50-kd":
        info["matrix_sparsity"] = prune_all(student)
        log(f"  per-matrix sparsity {info['matrix_sparsity']:.6f}")
    elif method in QUANT:
        recipe, fmt, how = QUANT[method]
        info.update(recipe=f"recipes/{recipe}", format=fmt, block_linears=how, embedding="rtn")
        if how == "rtn":
            rtn(student, fmt)
        else:
            # Compressor.quantize: the targets GPTQ does not apply to (wte) first, by round to
            # nearest, then GPTQ's calibration through the model as it now stands.
            rtn(student, fmt, names={"wte"})
            cal = recipe_calibration(recipe)
            info["calibration"] = dict(cal, seed=CALIBRATION_SEED, blocksize=GPTQ_BLOCKSIZE, percdamp=GPTQ_PERCDAMP,
                                       order="natural")
            info["gptq"] = gptq_model(student, fmt, calibration_windows(data["train"], cal["samples"], cal["seq"]))
        quantized = {id(p): fmt for _, p, _ in quant_targets(student)}
        if d is not None:
            grid = GridTrainer(student, fmt)
    compress_s = time.perf_counter() - t_start
    kd_s = 0.0
    if d is not None:
        sampler = SqueezeSampler(data["train"], d["seq"], SAMPLER_SEED)
        kd_s, info["last_step"] = distill(student, teacher, sampler, d, hook=hook, label=method, grid=grid)
        info["kd_tokens_per_s"] = d["steps"] * d["batch"] * d["seq"] / kd_s
        info["valid_ppl"], _ = perplexity(student, data["valid"][:EVAL_TOKENS + 1], d["seq"])
    c = counts(student, quantized)
    info.update(c)
    t0 = time.perf_counter()
    info["test_ppl"], info["test_tokens"] = perplexity(student, data["test"], student.config.n_positions)
    info["test_eval_s"] = time.perf_counter() - t0
    info["ratio_teacher"] = info["test_ppl"] / teacher_ppl
    info.update(compress_s=compress_s, kd_s=kd_s, wall_s=time.perf_counter() - t_start,
                loadavg_before=list(load_before), loadavg_after=list(os.getloadavg()))
    log(f"  {method}: test ppl {info['test_ppl']:.3f} ({info['ratio_teacher']:.4f}x teacher), {c['bytes']:,} bytes, non-zero {c['nonzero']:,}, "
        f"block linears {c['block_linear_params']:,}, wall {info['wall_s']:.0f} s")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=list(METHODS), metavar="M",
                    help=f"any of {', '.join(METHODS)} (default: {' '.join(DEFAULT_METHODS)})")
    ap.add_argument("--steps", type=int, help="distillation steps (overrides the recipes' steps; warmup capped at it)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply steps and warmup (squeeze --distill-scale)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, help="sequences per forward/backward (default: the recipe's micro_batch)")
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "default"))
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "corpus"), help="directory with train/valid/test.txt")
    ap.add_argument("--cache", default=os.path.join(ROOT, "runs", "pytorch_quality"), help="token cache directory")
    ap.add_argument("--eval-max-tokens", type=int,
                    help="score only the first N tokens of test.txt and valid.txt (quick runs; default: all of test, 65,537 of valid)")
    ap.add_argument("--teacher-ppl", type=float, metavar="PPL",
                    help="the teacher's test perplexity as measured before (skips its ~5-9 min evaluation; ratios use it)")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    args = ap.parse_args()
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.scale <= 0:
        ap.error("--scale must be > 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    for split in ("train", "valid", "test"):
        if not os.path.exists(os.path.join(args.data, f"{split}.txt")):
            raise SystemExit(f"{args.data}/{split}.txt missing: run python3 scripts/fetch_data.py")

    t0 = time.perf_counter()
    tok = GPT2TokenizerFast.from_pretrained(args.model)
    tok.model_max_length = 1 << 30
    data = {s: tokenize(tok, os.path.join(args.data, f"{s}.txt"), args.cache) for s in ("train", "valid", "test")}
    if args.eval_max_tokens:
        data["test"], data["valid"] = data["test"][:args.eval_max_tokens], data["valid"][:args.eval_max_tokens]
    log(f"tokens: train {len(data['train']):,}, valid {len(data['valid']):,}, test {len(data['test']):,} "
        f"({time.perf_counter() - t0:.1f} s)")
    # models/default/README.md: 118.48 on all of test.txt, 157.5345 (squeeze eval) on its first 10,240 tokens
    squeeze_ref = {None: "118.48", 10240: "157.5345 on the first 10,240 tokens"}.get(args.eval_max_tokens, "n/a for this prefix")
    teacher = load_model(args.model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    if any(m in QUANT for m in args.methods):
        check_quantizers(teacher)
    t0 = time.perf_counter()
    load_before = os.getloadavg()
    if args.teacher_ppl:
        teacher_ppl, scored = args.teacher_ppl, None
    else:
        teacher_ppl, scored = perplexity(teacher, data["test"], teacher.config.n_positions)
    teacher_info = dict(counts(teacher), method="teacher", test_ppl=teacher_ppl, test_tokens=scored, ratio_teacher=1.0,
                        test_eval_s=time.perf_counter() - t0, loadavg_before=list(load_before),
                        given=bool(args.teacher_ppl))
    log(f"teacher: test ppl {teacher_ppl:.3f} " + (f"on {scored:,} scored tokens ({teacher_info['test_eval_s']:.1f} s)" if scored
        else "(given by --teacher-ppl, not evaluated)") + f"; Squeeze's published value {squeeze_ref}")

    results = [run_method(m, args, teacher, data, teacher_ppl) for m in args.methods]
    dense = next((r for r in results if r["method"] == "dense-kd"), None)
    for r in results:
        r["ratio_dense_kd"] = r["test_ppl"] / dense["test_ppl"] if dense else None

    rows = [teacher_info] + results
    t_lin, t_nz, t_bytes = teacher_info["block_linear_params"], teacher_info["params"], teacher_info["bytes"]
    lines = ["| method | block-linear params | all params stored | non-zero (incl. embedding) | bytes | test ppl | ppl / teacher | ppl / dense-kd | valid ppl | KD tokens/s | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, spec: "" if v is None else format(v, spec)
    for r in rows:
        lines.append(f"| {r['method']} | {r['block_linear_params']:,} ({r['block_linear_params'] / t_lin:.2f}x) | {r['params']:,} | "
                     f"{r['nonzero']:,} ({r['nonzero'] / t_nz:.3f}x) | {r['bytes']:,} ({r['bytes'] / t_bytes:.3f}x) | "
                     f"{r['test_ppl']:.3f} | {r['ratio_teacher']:.4f} | "
                     f"{fmt(r.get('ratio_dense_kd'), '.4f')} | {fmt(r.get('valid_ppl'), '.2f')} | "
                     f"{fmt(r.get('kd_tokens_per_s'), '.0f')} | {fmt(r.get('wall_s'), '.0f')} |")
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"teacher {os.path.relpath(args.model, ROOT)} (test ppl {teacher_ppl:.3f}; Squeeze: {squeeze_ref})")
    print("\n".join(lines))
    if args.json:
        out = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
               "threads": args.threads, "cpu_count": os.cpu_count(), "model": os.path.relpath(args.model, ROOT),
               "sampler_seed": SAMPLER_SEED, "steps_override": args.steps, "scale": args.scale,
               "eval_max_tokens": args.eval_max_tokens,
               "teacher": teacher_info, "methods": results}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
