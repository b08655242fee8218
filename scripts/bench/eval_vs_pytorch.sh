#!/usr/bin/env bash
# `squeeze eval` against PyTorch + transformers on the same distilgpt2-shaped model (a random one
# written by transformers' save_pretrained), the same text (the first 20,480 tokens of
# data/corpus/test.txt) and the same rule (context = stride = 1024, 4 windows per forward, 2
# threads), each as a whole fresh process: loading, tokenising and the forward passes. Prints
# both tokens/s (scored tokens / the process's wall time), their ratio, both peak memories and
# both perplexities (which must agree: the same weights). Needs a python with torch and
# transformers ($PYTHON, default /work/venv/bin/python); run by hand, never in CI.
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
# PyTorch first: it also writes the model directory and the text both read.
"$PY" scripts/bench/pytorch_memory.py --kinds throughput --threads 2 --json "$OUT/pytorch.json" > "$OUT/pytorch.log"
MODEL=runs/pytorch_memory/distilgpt2-random TEXT=runs/pytorch_memory/test-20480.txt
OPENBLAS_NUM_THREADS=2 python3 scripts/bench/peakmem.py -- /bin/bash -c 'exec "$@" > "'"$OUT"'/squeeze.json"' _ \
    "$SQUEEZE" eval --model "$MODEL" --data "$TEXT" --context 1024 --stride 1024 --batch 4 --json > "$OUT/squeeze-mem.json"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
pt = [r for r in json.load(open(f"{out}/pytorch.json"))["results"] if r.get("kind") == "throughput"][0]
sq, mem = json.loads(open(f"{out}/squeeze.json").read().splitlines()[-1]), json.loads(open(f"{out}/squeeze-mem.json").read().splitlines()[-1])
pt_wall = pt["wall_s"]
sq_tps, pt_tps = sq["tokens"] / mem["seconds"], pt["scored_tokens"] / pt_wall
print(f"squeeze eval : {sq['tokens']:,} tokens, perplexity {sq['perplexity']:.4f}, whole process {mem['seconds']:.2f} s = {sq_tps:.1f} tokens/s, peak {mem['peak_rss_mb']:,} MB")
print(f"PyTorch      : {pt['scored_tokens']:,} tokens, perplexity {pt['perplexity']:.4f}, whole process {pt_wall:.2f} s = {pt_tps:.1f} tokens/s, peak {pt['peak_rss_bytes'] / 2**20:,.0f} MB")
print(f"squeeze / PyTorch tokens/s: {sq_tps / pt_tps:.2f}x")
PY
