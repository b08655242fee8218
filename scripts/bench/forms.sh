#!/usr/bin/env bash
# The packed forms on a whole model: one gpt2-shaped model (124M, random init: speed does not
# depend on the values) compressed one-shot into each form, then for each (and the dense F32
# model) in ROUNDS alternating rounds:
#   - eval at T=1024 (prefill: tokens/s over the first 8192 test tokens);
#   - decode: whole-process wall time of `generate --max-tokens 129` minus that of
#     `--max-tokens 1` (128 decoded tokens; loading and prefill cancel out);
#   - peak RSS of the eval process;
#   - the read bandwidth of the machine (`squeeze bench forms`' probe, 2 threads) once per round,
#     so dense F32 decode's bytes per second can be given as a fraction of it.
# Speedups are against dense F32 in the same round (the best round of each); bytes are the packed
# weights a token reads (wpe excluded), FLOPs per token of the block linears and the head.
# Writes runs/forms/results.md (a README table) and runs/forms/speedup.svg (speedup against the
# bytes ratio). Run by hand on a quiet machine, never in CI.
#
#   scripts/bench/forms.sh [ROUNDS]     (default 2)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
ROUNDS=${1:-2}
ensure_packages
python3 scripts/fetch_data.py
build_release
OUT=runs/forms
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-2}
[[ -d $OUT/dense ]] || "$SQUEEZE" init --config assets/configs/gpt2.json --out "$OUT/dense" > /dev/null
# name|recipe stages|packed precision
FORMS=(
  "dense f32||f32"
  "dense bf16||bf16"
  "50% unstructured|  - prune: {sparsity: 0.5, targets: [\"h.*\"]}|bf16"
  "2:4|  - prune: {n: 2, m: 4, targets: [\"h.*\"]}|bf16"
  "low rank 0.5x|  - lowrank: {targets: [\"h.*\"], budget: 0.5}|f32"
  "kronecker 0.5x|  - kronecker: {targets: [\"h.*\"], budget: 0.5, terms: 1}|f32"
  "q8_0|  - quantize: {format: q8_0, targets: [\"h.*\", \"wte\"]}|f32"
  "q4_0|  - quantize: {format: q4_0, targets: [\"h.*\", \"wte\"]}|f32"
  "50% + q4_0|  - prune: {sparsity: 0.5, targets: [\"h.*\"]}\n    quantize: {format: q4_0, targets: [\"h.*\", \"wte\"]}|f32"
)
dir_of() { [[ -z $2 ]] && echo "$OUT/dense" || echo "$OUT/$(echo "$1" | tr -c 'a-z0-9\n' '_')"; }
for f in "${FORMS[@]}"; do
    IFS='|' read -r name stage precision <<< "$f"
    d=$(dir_of "$name" "$stage")
    [[ -z $stage || -d $d ]] && continue
    printf 'stages:\n%b\n' "$stage" > "$OUT/recipe.yaml"
    echo "==> compress: $name" >&2
    "$SQUEEZE" compress --model "$OUT/dense" --recipe "$OUT/recipe.yaml" --out "$d" --json > /dev/null
done
wall() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null 2>&1; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'; }
: > "$OUT/results.jsonl"
for ((i = 1; i <= ROUNDS; i++)); do
    gbps=$("$SQUEEZE" bench forms --shapes 64x64 --rows 8 --json | tail -1 | python3 -c 'import json, sys; print(json.load(sys.stdin)["read_g_bps"])')
    echo "{\"read_gbps\": $gbps, \"round\": $i}" >> "$OUT/results.jsonl"
    for f in "${FORMS[@]}"; do
        IFS='|' read -r name stage precision <<< "$f"
        d=$(dir_of "$name" "$stage")
        echo "==> round $i: $name" >&2
        ev=$("$SQUEEZE" eval --model "$d" --data data/corpus/test.txt --context 1024 --batch 1 --max-tokens 8192 --precision "$precision" --json | tail -1)
        one=$(wall "$SQUEEZE" generate --model "$d" --prompt "It is a truth universally acknowledged" --max-tokens 1 --temperature 0 --precision "$precision")
        many=$(wall "$SQUEEZE" generate --model "$d" --prompt "It is a truth universally acknowledged" --max-tokens 129 --temperature 0 --precision "$precision")
        echo "{\"form\": \"$name\", \"round\": $i, \"eval\": $ev, \"decode_seconds\": $(awk -v a="$one" -v b="$many" 'BEGIN { print b - a }')}" >> "$OUT/results.jsonl"
    done
done
python3 scripts/bench/forms_report.py "$OUT"
