#!/usr/bin/env python3
"""PyTorch CPU baseline for Squeeze's GPT-2 kernels (run by hand, never in CI).

    /work/venv/bin/python scripts/bench/pytorch_baseline.py [--threads 2] [--json]

Measures, with torch.set_num_threads(--threads):

1. sgemm peak: GFLOP/s of torch.mm on 2048x2048 @ 2048x2048 float32
   (2*n^3 FLOPs, best of --sgemm-runs runs after one warm-up).
2. A distilgpt2-shaped randomly initialized GPT2LMHeadModel (n_layer=6,
   n_embd=768, n_head=12, vocab 50257, n_positions 1024, dropout 0, tied
   embeddings, float32, HF's default "sdpa" attention) at B=4, T=256:
   - forward:      eval mode under torch.no_grad()
   - fwd+bwd:      train mode, LM loss, backward (no optimizer)
   - kd_step:      teacher (second model of the same shape) forward under
                   no_grad + student forward/backward with
                   0.5 * KL(student/T || teacher/T) * T^2 + 0.5 * CE, T = 2,
                   + torch.optim.AdamW step
   Each: 1 warm-up iteration, then --iters (>= 3) timed iterations;
   tokens/s = iters * B * T / total time.

FLOP convention (also printed / in the JSON):
   forward FLOPs/token = 2 * (non-embedding params + vocab * n_embd)
                         + 4 * n_layer * T * n_embd
   "non-embedding params" = all parameters except wte and wpe (Conv1D weights
   and biases, LayerNorms); vocab*n_embd is the (tied) LM head matmul; the
   attention term (QK^T and AV) uses the FULL context T, i.e. no causal
   halving (the PaLM/Megatron MFU convention).  backward = 2 x forward, so
   fwd+bwd = 3 x forward and kd_step = 1 (teacher) + 3 (student) = 4 x forward
   (optimizer, softmax, LayerNorm, GELU FLOPs are not counted).
   "% of peak" = achieved GFLOP/s / sgemm-peak GFLOP/s.
"""

import argparse
import json
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

N_SGEMM = 2048
KD_TEMPERATURE = 2.0
KD_ALPHA = 0.5
FLOP_CONVENTION = ("forward FLOPs/token = 2*(non-embedding params + vocab*n_embd) + 4*n_layer*T*n_embd "
                   "(full T, no causal halving); backward = 2x forward; fwd+bwd = 3x; kd_step = 4x "
                   "(teacher fwd + student fwd+bwd); optimizer/elementwise FLOPs not counted")


def bench_sgemm(runs):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(N_SGEMM, N_SGEMM, generator=g)
    b = torch.randn(N_SGEMM, N_SGEMM, generator=g)
    c = torch.empty(N_SGEMM, N_SGEMM)
    torch.mm(a, b, out=c)  # warm-up
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * N_SGEMM ** 3
    return {"n": N_SGEMM, "runs": runs, "best_s": min(times), "gflops": flops / min(times) / 1e9,
            "median_gflops": flops / sorted(times)[len(times) // 2] / 1e9}


def make_model(seed):
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=6, n_head=12,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def timeit(fn, iters):
    fn()  # warm-up
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3, help="timed iterations per benchmark (>= 3)")
    ap.add_argument("--sgemm-runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.iters < 3:
        ap.error("--iters must be >= 3")
    torch.set_num_threads(args.threads)
    B, T = args.batch, args.seq
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print

    load_before = os.getloadavg()
    log(f"sgemm {N_SGEMM}^3 ...")
    sgemm = bench_sgemm(args.sgemm_runs)
    peak = sgemm["gflops"]

    student = make_model(0)
    teacher = make_model(1).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = student.config
    d, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    n_params = sum(p.numel() for p in student.parameters())  # tied head counted once
    n_embed = student.transformer.wte.weight.numel() + student.transformer.wpe.weight.numel()
    n_non_embed = n_params - n_embed
    fwd_flops_tok = 2 * (n_non_embed + V * d) + 4 * L * T * d

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T), generator=g)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.1)

    def forward():
        student.eval()
        with torch.no_grad():
            student(ids)

    def fwd_bwd():
        student.train()
        student.zero_grad(set_to_none=True)
        logits = student(ids).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss.backward()

    def kd_step():
        student.train()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t_logits = teacher(ids).logits
        s_logits = student(ids).logits
        tau = KD_TEMPERATURE
        kl = F.kl_div(F.log_softmax(s_logits.reshape(-1, V) / tau, dim=-1),
                      F.log_softmax(t_logits.reshape(-1, V) / tau, dim=-1),
                      log_target=True, reduction="batchmean") * tau * tau
        ce = F.cross_entropy(s_logits[:, :-1].reshape(-1, V), ids[:, 1:].reshape(-1))
        loss = KD_ALPHA * kl + (1 - KD_ALPHA) * ce
        loss.backward()
        opt.step()

    results = {}
    for name, fn, mult in (("forward", forward, 1), ("fwd_bwd", fwd_bwd, 3), ("kd_step", kd_step, 4)):
        log(f"{name} ...")
        times = timeit(fn, args.iters)
        total = sum(times)
        tok_s = args.iters * B * T / total
        flops_tok = mult * fwd_flops_tok
        gflops = tok_s * flops_tok / 1e9
        results[name] = {"tokens_per_s": tok_s, "s_per_iter_mean": total / args.iters,
                         "s_per_iter_best": min(times), "flops_per_token": flops_tok,
                         "achieved_gflops": gflops, "pct_of_sgemm_peak": 100.0 * gflops / peak}

    out = {
        "threads": args.threads,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg()),
        "sgemm": sgemm,
        "model": {"n_layer": L, "n_embd": d, "n_head": cfg.n_head, "vocab_size": V,
                  "n_positions": cfg.n_positions, "B": B, "T": T, "params_total": n_params,
                  "params_non_embedding": n_non_embed, "attn_implementation": student.config._attn_implementation,
                  "forward_flops_per_token": fwd_flops_tok, "flop_convention": FLOP_CONVENTION,
                  "iters": args.iters, "warmup": 1,
                  "kd": {"temperature": KD_TEMPERATURE, "alpha": KD_ALPHA, "optimizer": "AdamW"}},
        "results": results,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"\nPyTorch {torch.__version__} (transformers {transformers.__version__}), threads={args.threads}, "
          f"load avg before/after {load_before[0]:.2f}/{out['loadavg_after'][0]:.2f}")
    print(f"sgemm {N_SGEMM}^3 float32: {peak:.1f} GFLOP/s (best of {args.sgemm_runs}), "
          f"median {sgemm['median_gflops']:.1f}")
    print(f"model: GPT-2 L={L} d={d} h={cfg.n_head} V={V}, B={B} T={T}, params {n_params/1e6:.2f}M "
          f"(non-embedding {n_non_embed/1e6:.2f}M), forward {fwd_flops_tok/1e6:.1f} MFLOP/token")
    print(f"FLOPs: {FLOP_CONVENTION}")
    print(f"{'benchmark':10s} {'tokens/s':>10s} {'s/iter':>8s} {'GFLOP/s':>9s} {'% peak':>7s}")
    for name, r in results.items():
        print(f"{name:10s} {r['tokens_per_s']:10.1f} {r['s_per_iter_mean']:8.3f} "
              f"{r['achieved_gflops']:9.1f} {r['pct_of_sgemm_peak']:6.1f}%")


if __name__ == "__main__":
    main()
