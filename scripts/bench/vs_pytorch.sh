#!/usr/bin/env bash
# Squeeze's kernels against PyTorch's on the same distilgpt2-shaped model (B=4, T=256, 2 threads),
# measured in one run: `squeeze bench model` (forward, forward+backward), `squeeze bench train`
# (the KD step: teacher forward + student forward/backward + AdamW, 1 rank) and
# scripts/bench/pytorch_baseline.py (the same three in PyTorch, and its sgemm peak), taken in turn
# ROUNDS times (ABAB...: a shared machine's speed drifts by tens of percent within minutes), then
# the best figure of each and Squeeze / PyTorch. Needs a python with torch and transformers
# ($PYTHON, default /work/venv/bin/python); run by hand, never in CI.
#
#   scripts/bench/vs_pytorch.sh [ROUNDS]     (default 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
ROUNDS=${1:-3}
PY=${PYTHON:-/work/venv/bin/python}
"$PY" -c "import torch, transformers" 2>/dev/null || { echo "vs_pytorch.sh: needs torch + transformers in $PY (set PYTHON)" >&2; exit 1; }
ensure_packages
build_release
OUT=runs/vs_pytorch
mkdir -p "$OUT"
: > "$OUT/results.jsonl"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
for ((i = 1; i <= ROUNDS; i++)); do
    for bench in model train; do
        echo "==> round $i squeeze bench $bench" >&2
        echo "{\"who\": \"squeeze-$bench\", \"result\": $("$SQUEEZE" bench "$bench" --json | tail -1)}" >> "$OUT/results.jsonl"
    done
    echo "==> round $i pytorch_baseline.py" >&2
    echo "{\"who\": \"pytorch\", \"result\": $("$PY" scripts/bench/pytorch_baseline.py --threads 2 --json 2> "$OUT/pytorch.err" | tail -1)}" >> "$OUT/results.jsonl"
done
python3 - "$OUT/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def best(who, pick):
    vals = [pick(r["result"]) for r in rows if r["who"] == who]
    return max(vals), min(vals), len(vals)
def torch(name):
    return lambda r: r["results"][name]["tokens_per_s"]
figures = [("forward", best("squeeze-model", lambda r: r["forward_tokens_per_second"]), best("pytorch", torch("forward"))),
           ("forward+backward", best("squeeze-model", lambda r: r["train_tokens_per_second"]), best("pytorch", torch("fwd_bwd"))),
           ("KD step (teacher fwd + student fwd/bwd + AdamW)", best("squeeze-train", lambda r: r["tokens_per_s"]), best("pytorch", torch("kd_step")))]
peaks = (best("squeeze-train", lambda r: r["sgemm_peak_gflops"]), best("pytorch", lambda r: r["sgemm"]["gflops"]))
n = figures[0][1][2]
print(f"best of {n} rounds (worst in brackets), tokens/s, B=4 T=256, 2 threads")
print("| figure | Squeeze | PyTorch | Squeeze / PyTorch |")
print("|---|---|---|---|")
for name, s, p in figures:
    print(f"| {name} | {s[0]:.1f} ({s[1]:.1f}) | {p[0]:.1f} ({p[1]:.1f}) | **{s[0] / p[0]:.2f}x** |")
print(f"| sgemm 2048^3 GFLOP/s (OpenBLAS / PyTorch's) | {peaks[0][0]:.1f} ({peaks[0][1]:.1f}) | {peaks[1][0]:.1f} ({peaks[1][1]:.1f}) | {peaks[0][0] / peaks[1][0]:.2f}x |")
PY
