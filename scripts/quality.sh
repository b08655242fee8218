#!/usr/bin/env bash
# Runs every recipe on the bundled model with the same distillation budget and prints, per
# method: parameters (block linears stored; whole model stored and non-zero, the embedding
# included), bytes on disk, test perplexity and its ratio to the teacher and to the
# dense-distillation control (recipes/dense-control.yaml, run first with the same budget),
# inference tokens/s relative to the teacher, and the wall time of the run.
#
#   scripts/quality.sh [--scale X] [recipe.yaml ...]     (default: all recipes, scale 1)
#   QUALITY_DIR=runs/quality-tenth scripts/quality.sh ...   another results directory
#   SKIP_DONE=1 scripts/quality.sh ...   keeps every run that already has its eval in runs/quality/
#   (the control included), so an interrupted or piecewise series goes on where it stopped
# Results: runs/quality/results.md (and .json) and frontier.svg (test perplexity against bytes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SQUEEZE_ROOT"
SCALE=1
RECIPES=()
while (($#)); do
    case $1 in
        --scale) SCALE=$2; shift ;;
        *) RECIPES+=("$1") ;;
    esac
    shift
done
((${#RECIPES[@]})) || RECIPES=(recipes/magnitude-oneshot.yaml recipes/wanda.yaml recipes/sparsegpt.yaml recipes/prune-ofa.yaml
                               recipes/nm24-kd.yaml recipes/lowrank-half.yaml recipes/kronecker-half.yaml recipes/lowrank-whiten-half.yaml
                               recipes/kronecker-whiten-half.yaml recipes/combined.yaml
                               recipes/whole-half.yaml)
# The dense-distillation control runs first, with the same budget: every ratio is also given to it.
RECIPES=(recipes/dense-control.yaml "${RECIPES[@]}")
NP=${NP:-2}
MODEL=models/default
Q=${QUALITY_DIR:-runs/quality}
ensure_packages
python3 scripts/fetch_data.py
build_release
mkdir -p "$Q"
evaluate() {  # evaluate DIR NAME: test perplexity and throughput (one rank, 2 threads, same for all)
    "$SQUEEZE" eval --model "$1" --data data/corpus/test.txt --batch 4 --json > "$Q/$2.eval.json"
    "$SQUEEZE" analyze --model "$1" --json > "$Q/$2.analyze.json"
}
evaluate "$MODEL" teacher
for r in "${RECIPES[@]}"; do
    name=$(basename "$r" .yaml)
    echo "==> $name"
    [[ -n ${SKIP_DONE:-} && -f $Q/$name.eval.json ]] && { echo "(done: $Q/$name)"; continue; }
    mpirun -np "$NP" "$SQUEEZE" compress --model "$MODEL" --recipe "$r" --out "$Q/$name" --data data/corpus/train.txt \
        --valid data/corpus/valid.txt --distill-scale "$SCALE" --json > "$Q/$name.compress.json"
    "$SQUEEZE" analyze --model "$Q/$name" --compare "$MODEL" --plot "$Q/$name/stable-rank.svg" > /dev/null
    evaluate "$Q/$name" "$name"
done
python3 scripts/quality_table.py "$Q" "$MODEL" "${RECIPES[@]}"
