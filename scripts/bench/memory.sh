#!/usr/bin/env bash
# Peak memory and time of the GPT-2 family on this node: for each shape (random weights written
# by `squeeze init`, F32), through scripts/bench/peakmem.py (largest process RSS, and the node's
# total as the sum of proportional set sizes, so node-shared windows count once):
#   - init          squeeze init (writing the directory)
#   - eval          squeeze eval at its defaults, context 1024, 2 windows of test text
#   - magnitude     one-shot compression of every block linear: magnitude 50%
#   - sparsegpt     SparseGPT 50% (16 calibration windows of 256 tokens)
#   - lowrank       truncated SVD at half the parameters (budget 0.5)
#   - kronecker     two Kronecker terms within half the parameters (factors auto)
#   - distill np=1  one distillation step, micro-batch 1, seq 1024 (teacher = the model)
#   - distill np=2  the same with 2 ranks on this node (global batch 2, one sequence per rank)
#   - generate      32 tokens with the KV cache
# Results: one JSON line per measurement on stdout and in runs/memory/results.jsonl, a markdown
# table in runs/memory/results.md. The large model files are deleted after each shape.
#
#   scripts/bench/memory.sh [SHAPE ...]      (default: gpt2 gpt2-medium gpt2-large gpt2-xl)
#   SKIP="sparsegpt kronecker" scripts/bench/memory.sh gpt2-xl     (leave measurements out)
#   TARGETS='["h.0.*", "h.1.*"]' ... compresses only those layers in the one-shot methods (their time
#   then covers those layers; the model and calibration still load and run whole)
#   APPEND=1 ... adds to runs/memory/results.jsonl instead of starting it again
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
ensure_packages
python3 scripts/fetch_data.py > /dev/null
build_release
SHAPES=("$@")
((${#SHAPES[@]})) || SHAPES=(gpt2 gpt2-medium gpt2-large gpt2-xl)
OUT=runs/memory
mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/squeeze-memory.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
RESULTS=$OUT/results.jsonl
[[ -n ${APPEND:-} ]] || : > "$RESULTS"
TEXT=data/corpus/train.txt
SKIP=${SKIP:-}

# measure SHAPE WHAT COMMAND...: runs it under peakmem.py and records the figures.
measure() {
    local shape=$1 what=$2; shift 2
    if [[ " $SKIP " == *" $what "* ]]; then echo "($shape $what skipped)"; return 0; fi
    echo "==> $shape $what" >&2
    local line status=0
    line=$(python3 scripts/bench/peakmem.py -- "$@" 2> "$WORK/err.log" | tail -1) || status=$?
    if ((status != 0)); then
        tail -5 "$WORK/err.log" >&2
        line="{\"exit_status\": $status}"
    fi
    python3 -c "import json,sys; d=json.loads(sys.argv[3]); d.update(shape=sys.argv[1], what=sys.argv[2], targets=sys.argv[4]); print(json.dumps(d))" \
        "$shape" "$what" "$line" "$LINEARS" | tee -a "$RESULTS"
}

recipe() {  # recipe NAME YAML-STAGE: a one-stage recipe file
    printf 'name: %s\ncalibration: {samples: 16, seq: 256}\nstages:\n  - %s\n' "$1" "$2" > "$WORK/$1.yaml"
    echo "$WORK/$1.yaml"
}
LINEARS=${TARGETS:-'["h.*.attn.*", "h.*.mlp.*"]'}
recipe magnitude "prune: {sparsity: 0.5, method: magnitude, targets: $LINEARS}" > /dev/null
recipe sparsegpt "prune: {sparsity: 0.5, method: sparsegpt, targets: $LINEARS}" > /dev/null
recipe lowrank "lowrank: {budget: 0.5, targets: $LINEARS}" > /dev/null
recipe kronecker "kronecker: {factors: auto, terms: 2, budget: 0.5, targets: $LINEARS}" > /dev/null
recipe distill1 "distill: {steps: 1, batch: 1, seq: 1024, micro_batch: 1, eval_tokens: 2048}" > /dev/null
recipe distill2 "distill: {steps: 1, batch: 2, seq: 1024, micro_batch: 1, eval_tokens: 2048}" > /dev/null

for shape in "${SHAPES[@]}"; do
    M=$WORK/$shape
    measure "$shape" init "$SQUEEZE" init --config "assets/configs/$shape.json" --out "$M"
    measure "$shape" eval "$SQUEEZE" eval --model "$M" --data data/corpus/test.txt --max-tokens 2049
    for r in magnitude sparsegpt lowrank kronecker; do
        measure "$shape" "$r" "$SQUEEZE" compress --model "$M" --recipe "$WORK/$r.yaml" --data "$TEXT" --out "$WORK/$shape-$r"
        rm -rf "$WORK/$shape-$r"
    done
    measure "$shape" "distill np=1" "$SQUEEZE" compress --model "$M" --recipe "$WORK/distill1.yaml" --data "$TEXT" --out "$WORK/$shape-d1"
    rm -rf "$WORK/$shape-d1"
    measure "$shape" "distill np=2" mpirun -np 2 "$SQUEEZE" compress --model "$M" --recipe "$WORK/distill2.yaml" --data "$TEXT" --out "$WORK/$shape-d2"
    rm -rf "$WORK/$shape-d2"
    measure "$shape" generate "$SQUEEZE" generate --model "$M" --prompt "It is a truth universally acknowledged" --max-tokens 32 --temperature 0
    rm -rf "$M"
done

python3 - "$RESULTS" "$OUT/results.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
shapes = list(dict.fromkeys(r["shape"] for r in rows))
whats = list(dict.fromkeys(r["what"] for r in rows))
def cell(r):
    if r is None: return ""
    if r.get("exit_status"): return f"failed ({r['exit_status']})"
    part = "" if r.get("targets", "").startswith('["h.*.attn.*"') or r["what"] not in ("magnitude", "sparsegpt", "lowrank", "kronecker") \
        else f" ({r['targets']})"
    return f"{r['peak_rss_mb'] / 1024:.2f} / {r['node_peak_mb'] / 1024:.2f} GiB, {r['seconds']:.0f} s{part}"
lines = ["| measurement | " + " | ".join(shapes) + " |", "|---|" + "---|" * len(shapes)]
for w in whats:
    lines.append(f"| {w} | " + " | ".join(cell(next((r for r in rows if r["shape"] == s and r["what"] == w), None)) for s in shapes) + " |")
text = "\n".join(lines) + "\n\n(largest process RSS / node total (Pss), wall time)\n"
print(text)
open(sys.argv[2], "w").write(text)
PY
