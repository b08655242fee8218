#!/usr/bin/env python3
"""PyTorch CPU memory and speed baselines for Squeeze's issue 11 (run by hand, never in CI).

    /work/venv/bin/python scripts/bench/pytorch_memory.py [--shapes gpt2 gpt2-medium ...]
        [--kinds eval kd throughput] [--threads 2] [--max-gib 20] [--json OUT]

Every measurement runs in a fresh child process (this script with --child), so its peak resident
memory is the child's own ru_maxrss, read with os.wait4() on that child (the per-child form of
getrusage(RUSAGE_CHILDREN), which would report the largest child so far). Models are randomly
initialized GPT2LMHeadModel (HF's init, seed 0; teacher seed 1), vocab 50257, n_positions 1024,
float32, dropout 0, HF's default "sdpa" attention, torch.set_num_threads(--threads):

  shape         n_layer  n_embd  n_head
  gpt2             12      768     12
  gpt2-medium      24     1024     16
  gpt2-large       36     1280     20
  gpt2-xl          48     1600     25
  distilgpt2        6      768     12   (throughput only)

  eval        model.eval(), one forward of a 1024-token window (batch 1) under torch.no_grad()
  kd          one KD step at micro-batch 1, seq 1024, as scripts/bench/pytorch_baseline.py:
              teacher (second model of the same shape) forward under no_grad + student
              forward/backward of 0.5 * T^2 * KL(student/T || teacher/T) + 0.5 * CE, T = 2,
              + torch.optim.AdamW step (lr 1e-4, weight decay 0.1, default foreach kernels)
  throughput  distilgpt2 shape as a whole process: from_pretrained() of a saved HF directory
              (random weights, float32 safetensors, written once by a --child prepare run),
              GPT2TokenizerFast on a text file (data/corpus/test.txt cut to its first
              --throughput-tokens tokens), sliding-window perplexity with context = stride = 1024
              (Squeeze's eval rule), --eval-batch windows per forward; tokens/s = scored tokens
              / time from the child's start of main (after imports) and / the child's whole
              wall time as the parent sees it (interpreter start and imports included)

Times: init_s (building the model(s)), op_s (the measured forward or KD step, run once: a cold
call, as in a fresh process), wall_s (the whole child, seen by the parent).

A measurement whose estimate exceeds --max-gib (default 20) or the memory available now (less
1 GiB) is skipped; each child also sets its oom_score_adj to 1000, so that if memory does run out
the kernel ends the measurement rather than another user's process. Estimates (P = parameters):
    kd   = max(24 P, 12 P + 34 * n_layer * T * n_embd * 4) bytes
           (teacher, student, gradients, 2 Adam moments and foreach AdamW's sqrt temporary at the
           optimizer step, which is the peak unless the saved activations of backward are larger)
           + 6 * T * vocab * 4 bytes (logits, log-softmaxes and their gradients) + 0.5 GiB
    eval = 4 P + 3 * T * vocab * 4 bytes + 0.5 GiB
(the kd rule matched the measured 4.62 GiB for gpt2 and 9.59 GiB for gpt2-medium within 0.2 GiB;
an earlier rule that added the activations to 24 P overestimated them by 1.0 and 3.2 GiB; the
eval rule underestimates by 0.6 GiB for gpt2 to 1.4 GiB for gpt2-xl, far below any limit). The
estimates are printed next to the measurements so they can be checked.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHAPES = {
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
    "distilgpt2": (6, 768, 12),
}
VOCAB, N_POS, T = 50257, 1024, 1024
KD_TEMPERATURE, KD_ALPHA = 2.0, 0.5
GIB = 1 << 30


def param_count(shape):
    """Parameters of GPT2LMHeadModel (tied head counted once)."""
    L, d, _ = SHAPES[shape]
    per_block = 12 * d * d + 13 * d   # c_attn, c_proj, c_fc, mlp.c_proj weights + biases, 2 LayerNorms
    return VOCAB * d + N_POS * d + L * per_block + 2 * d


def estimate_bytes(shape, kind):
    L, d, _ = SHAPES[shape]
    P = param_count(shape)
    if kind == "eval":
        return 4 * P + 3 * T * VOCAB * 4 + GIB // 2
    return max(24 * P, 12 * P + 34 * L * T * d * 4) + 6 * T * VOCAB * 4 + GIB // 2


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def uptime():
    return open("/proc/loadavg").read().split()[:3]


# ----------------------------------------------------------------------------- children
def child(args):
    t_main = time.perf_counter()
    try:   # if memory runs out, the kernel should end this measurement, not someone else's process
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    import torch
    import torch.nn.functional as F
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    t_imported = time.perf_counter()
    out = {"kind": args.child, "shape": args.shape}

    def make(seed):
        L, d, h = SHAPES[args.shape]
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_POS, n_embd=d, n_layer=L, n_head=h,
                         resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        torch.manual_seed(seed)
        return GPT2LMHeadModel(cfg)

    if args.child == "prepare":       # saved distilgpt2-shaped directory + the text prefix
        m = make(0)
        m.save_pretrained(args.dir, safe_serialization=True)
        tok = GPT2TokenizerFast.from_pretrained(os.path.join(ROOT, "models", "default"))
        tok.save_pretrained(args.dir)
        text = open(os.path.join(ROOT, "data", "corpus", "test.txt"), encoding="utf-8").read()
        tok.model_max_length = 1 << 30
        ids = tok(text)["input_ids"][:args.throughput_tokens]
        prefix = tok.decode(ids)
        assert text.startswith(prefix), "decoded prefix differs from the text"
        with open(args.text, "w", encoding="utf-8") as f:
            f.write(prefix)
        out.update(params=sum(p.numel() for p in m.parameters()), text_tokens=len(ids), text_chars=len(prefix))
    elif args.child == "eval":
        m = make(0).eval()
        out["params"] = sum(p.numel() for p in m.parameters())
        ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))
        t_init = time.perf_counter()
        with torch.no_grad():
            logits = m(ids).logits
        out["op_s"] = time.perf_counter() - t_init
        out["init_s"] = t_init - t_imported
        out["tokens_per_s"] = T / out["op_s"]
        out["logits_finite"] = bool(torch.isfinite(logits).all())
    elif args.child == "kd":
        student = make(0)
        teacher = make(1).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        out["params"] = sum(p.numel() for p in student.parameters())
        opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.1, betas=(0.9, 0.95))
        ids = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(0))
        student.train()
        t_init = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            t_logits = teacher(ids).logits
        s_logits = student(ids).logits
        tau = KD_TEMPERATURE
        kl = F.kl_div(F.log_softmax(s_logits.reshape(-1, VOCAB) / tau, dim=-1),
                      F.log_softmax(t_logits.reshape(-1, VOCAB) / tau, dim=-1),
                      log_target=True, reduction="batchmean") * tau * tau
        ce = F.cross_entropy(s_logits[:, :-1].reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        loss = KD_ALPHA * kl + (1 - KD_ALPHA) * ce
        loss.backward()
        opt.step()
        out["op_s"] = time.perf_counter() - t_init
        out["init_s"] = t_init - t_imported
        out["tokens_per_s"] = T / out["op_s"]
        out["loss"] = loss.item()
    elif args.child == "throughput":
        m = GPT2LMHeadModel.from_pretrained(args.dir).eval()
        tok = GPT2TokenizerFast.from_pretrained(args.dir)
        tok.model_max_length = 1 << 30
        t_loaded = time.perf_counter()
        ids = torch.tensor(tok(open(args.text, encoding="utf-8").read())["input_ids"])
        t_tok = time.perf_counter()
        n = len(ids)
        nll, scored, windows, begin, prev_end = 0.0, 0, [], 0, 0
        while begin < n:
            end = min(begin + T, n)
            windows.append((begin, end, max(prev_end, begin + 1)))
            prev_end = end
            if end == n:
                break
            begin += T
        with torch.no_grad():
            i = 0
            while i < len(windows):
                length = windows[i][1] - windows[i][0]
                group = [windows[i]]
                while i + len(group) < len(windows) and len(group) < args.eval_batch and \
                        windows[i + len(group)][1] - windows[i + len(group)][0] == length:
                    group.append(windows[i + len(group)])
                x = torch.stack([ids[b:e] for b, e, _ in group])
                labels = torch.full_like(x, -100)
                for r, (b, e, first) in enumerate(group):
                    labels[r, :length - 1] = ids[b + 1:e]
                    labels[r, :max(first - b - 1, 0)] = -100
                logits = m(x).logits
                nll += F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="sum").item()
                scored += int((labels != -100).sum())
                i += len(group)
        t_end = time.perf_counter()
        out.update(params=sum(p.numel() for p in m.parameters()), text_tokens=n, scored_tokens=scored, windows=len(windows),
                   eval_batch=args.eval_batch, load_s=t_loaded - t_imported, tokenize_s=t_tok - t_loaded,
                   forward_s=t_end - t_tok, main_s=t_end - t_main, imports_s=t_imported - t_main,
                   perplexity=float(torch.tensor(nll / scored).exp()))
        out["tokens_per_s_main"] = scored / (t_end - t_imported)   # load + tokenize + eval
    print(json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- parent
def run_child(argv):
    """Runs this script with argv in a fresh process; returns (its JSON, peak RSS bytes, wall s)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + argv, stdout=subprocess.PIPE, text=True)
    stdout = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}"}, ru.ru_maxrss * 1024, wall
    return json.loads(stdout.strip().splitlines()[-1]), ru.ru_maxrss * 1024, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"],
                    choices=[s for s in SHAPES if s != "distilgpt2"])
    ap.add_argument("--kinds", nargs="+", default=["eval", "kd", "throughput"], choices=["eval", "kd", "throughput"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-gib", type=float, default=20.0, help="skip a measurement whose estimate exceeds this")
    ap.add_argument("--throughput-tokens", type=int, default=20480, help="tokens of test.txt for the throughput run")
    ap.add_argument("--eval-batch", type=int, default=4, help="windows per forward in the throughput run (squeeze eval's default)")
    ap.add_argument("--work", default=os.path.join(ROOT, "runs", "pytorch_memory"), help="saved model and text prefix")
    ap.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    ap.add_argument("--child", choices=["prepare", "eval", "kd", "throughput"], help=argparse.SUPPRESS)
    ap.add_argument("--shape", default="distilgpt2", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    ap.add_argument("--text", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)

    common = ["--threads", str(args.threads)]
    rows = []

    def measure(kind, shape, extra=()):
        est = estimate_bytes(shape, kind) if kind in ("eval", "kd") else None
        avail = mem_available()
        row = {"kind": kind, "shape": shape, "layers_embd_heads": SHAPES[shape], "params": param_count(shape),
               "estimate_gib": est / GIB if est else None, "mem_available_gib": avail / GIB if avail else None,
               "loadavg": uptime()}
        limit = min(args.max_gib * GIB, (avail - GIB) if avail else float("inf"))
        if est and est > limit:
            row["skipped"] = (f"estimate {est / GIB:.1f} GiB exceeds "
                              f"{'--max-gib' if limit == args.max_gib * GIB else 'available memory - 1 GiB'} ({limit / GIB:.1f} GiB)")
            print(f"{kind:10s} {shape:12s} skipped: {row['skipped']}", file=sys.stderr, flush=True)
        else:
            print(f"{kind:10s} {shape:12s} load avg {' '.join(row['loadavg'])} (estimate "
                  f"{'-' if est is None else f'{est / GIB:.1f} GiB'}) ...", file=sys.stderr, flush=True)
            res, rss, wall = run_child(["--child", kind, "--shape", shape] + common + list(extra))
            row.update(res, peak_rss_gib=rss / GIB, peak_rss_bytes=rss, wall_s=wall)
            if kind == "throughput" and "scored_tokens" in res:
                row["tokens_per_s_process"] = res["scored_tokens"] / wall
        rows.append(row)

    for kind in ("eval", "kd"):
        if kind in args.kinds:
            for s in args.shapes:
                measure(kind, s)
    if "throughput" in args.kinds:
        os.makedirs(args.work, exist_ok=True)
        mdir, text = os.path.join(args.work, "distilgpt2-random"), os.path.join(args.work, f"test-{args.throughput_tokens}.txt")
        if not (os.path.exists(os.path.join(mdir, "model.safetensors")) and os.path.exists(text)):
            res, _, _ = run_child(["--child", "prepare", "--dir", mdir, "--text", text,
                                   "--throughput-tokens", str(args.throughput_tokens)] + common)
            if "error" in res:
                raise SystemExit(f"preparing {mdir}: {res['error']}")
        measure("throughput", "distilgpt2", ["--dir", mdir, "--text", text, "--eval-batch", str(args.eval_batch)])

    import torch
    import transformers
    fmt = lambda v, spec: "" if v is None else format(v, spec)
    print(f"PyTorch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, float32, T = {T}")
    print("| what | shape | params | load avg (1/5/15 min) | estimate GiB | peak RSS GiB | init s | op s | tokens/s | wall s |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if "skipped" in r or "error" in r:
            print(f"| {r['kind']} | {r['shape']} | {r['params']:,} | {' '.join(r['loadavg'])} | {fmt(r['estimate_gib'], '.1f')} | "
                  f"{r.get('skipped') or r.get('error')} | | | | |")
        elif r["kind"] == "throughput":
            print(f"| throughput (load + tokenize + eval of {r['scored_tokens']:,} scored tokens, batch {r['eval_batch']}) | "
                  f"{r['shape']} | {r['params']:,} | {' '.join(r['loadavg'])} | | {r['peak_rss_gib']:.2f} | "
                  f"load {r['load_s']:.1f}, tokenize {r['tokenize_s']:.2f} | {r['forward_s']:.1f} | "
                  f"{r['tokens_per_s_main']:.0f} (process: {r['tokens_per_s_process']:.0f}) | {r['wall_s']:.1f} |")
        else:
            print(f"| {r['kind']} | {r['shape']} | {r['params']:,} | {' '.join(r['loadavg'])} | {r['estimate_gib']:.1f} | "
                  f"{r['peak_rss_gib']:.2f} | {r['init_s']:.1f} | {r['op_s']:.2f} | {r['tokens_per_s']:.1f} | {r['wall_s']:.1f} |")
    if args.json:
        out = {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
               "threads": args.threads, "cpu_count": os.cpu_count(), "T": T, "vocab": VOCAB, "results": rows}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
