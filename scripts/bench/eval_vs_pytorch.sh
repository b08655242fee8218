#!/usr/bin/env bash
# `squeeze eval` against PyTorch + transformers on the same distilgpt2-shaped model (a random one
# written by transformers' save_pretrained), the same text (the first 20,480 tokens of
# data/corpus/test.txt) and the same rule (context = stride = 1024, 4 windows per forward, 2
# threads), each as a whole fresh process: loading, tokenizing and the forward passes. Prints
# both tokens/s (scored tokens / the process's wall time), their ratio, both peak memories and
# both perplexities (which must agree: the same weights). Needs a python with torch and
# transformers ($PYTHON, default /work/venv/bin/python); run by hand, never in CI.
#
#   scripts/bench/eval_vs_pytorch.sh [ROUNDS]     (default 3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
PY=${PYTHON:-/work/venv/bin/python}
"$PY" -c "import torch, transformers" 2>/dev/null || { echo "eval_vs_pytorch.sh: needs torch + transformers in $PY (set PYTHON)" >&2; exit 1; }
ensure_packages
python3 scripts/fetch_data.py > /dev/null
build_release
OUT=runs/eval_vs_pytorch
mkdir -p "$OUT"
# PyTorch first: it also writes the model directory and the text both read. Then the two in turn,
# ROUNDS times (a shared machine's speed drifts by tens of percent within minutes): best of each.
ROUNDS=${1:-3}
MODEL=runs/pytorch_memory/distilgpt2-random TEXT=runs/pytorch_memory/test-20480.txt
for ((i = 1; i <= ROUNDS; i++)); do
    echo "==> round $i PyTorch, then squeeze eval" >&2
    "$PY" scripts/bench/pytorch_memory.py --kinds throughput --threads 2 --json "$OUT/pytorch-$i.json" > "$OUT/pytorch-$i.log"
    OPENBLAS_NUM_THREADS=2 python3 scripts/bench/peakmem.py -- /bin/bash -c 'exec "$@" > "'"$OUT"'/squeeze-'$i'.json"' _ \
        "$SQUEEZE" eval --model "$MODEL" --data "$TEXT" --context 1024 --stride 1024 --batch 4 --json > "$OUT/squeeze-mem-$i.json"
done
python3 - "$OUT" "$ROUNDS" <<'PY'
import json, sys
out, rounds = sys.argv[1], int(sys.argv[2])
pts, sqs = [], []
for i in range(1, rounds + 1):
    pts.append([r for r in json.load(open(f"{out}/pytorch-{i}.json"))["results"] if r.get("kind") == "throughput"][0])
    sq = json.loads(open(f"{out}/squeeze-{i}.json").read().splitlines()[-1])
    mem = json.loads(open(f"{out}/squeeze-mem-{i}.json").read().splitlines()[-1])
    sqs.append((sq, mem))
sq, mem = min(sqs, key=lambda s: s[1]["seconds"])
pt = min(pts, key=lambda p: p["wall_s"])
sq_tps, pt_tps = sq["tokens"] / mem["seconds"], pt["scored_tokens"] / pt["wall_s"]
print(f"best of {rounds} rounds, each a whole fresh process (load, tokenize, forward); slowest in brackets")
print(f"squeeze eval : {sq['tokens']:,} tokens, perplexity {sq['perplexity']:.4f}, {mem['seconds']:.2f} s "
      f"({max(m['seconds'] for _, m in sqs):.2f}) = {sq_tps:.1f} tokens/s, peak {mem['peak_rss_mb']:,} MB")
print(f"PyTorch      : {pt['scored_tokens']:,} tokens, perplexity {pt['perplexity']:.4f}, {pt['wall_s']:.2f} s "
      f"({max(p['wall_s'] for p in pts):.2f}) = {pt_tps:.1f} tokens/s, peak {pt['peak_rss_bytes'] / 2**20:,.0f} MB")
print(f"squeeze / PyTorch tokens/s: {sq_tps / pt_tps:.2f}x")
PY
