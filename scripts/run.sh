#!/usr/bin/env bash
# The main job on the bundled default model (models/default, trained by Squeeze on Austen and
# Shakespeare): 50% Prune-OFA compression with distillation over 2 MPI ranks, then perplexity
# before and after on the held-out novel and the stable-rank analysis.
#
#   scripts/run.sh            short distillation budget (a few minutes on 2 cores)
#   scripts/run.sh --full     the recipe's full budget
#   scripts/run.sh --recipe recipes/kronecker-half.yaml [--full]
#   NP=4 scripts/run.sh       more ranks
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SQUEEZE_ROOT"

RECIPE=recipes/prune-ofa.yaml
SCALE=0.15
while (($#)); do
    case $1 in
        --full) SCALE=1 ;;
        --recipe) RECIPE=$2; shift ;;
        *) echo "usage: scripts/run.sh [--full] [--recipe FILE]" >&2; exit 2 ;;
    esac
    shift
done
NP=${NP:-2}
MODEL=models/default
OUT=runs/$(basename "$RECIPE" .yaml)

ensure_packages
python3 scripts/fetch_data.py
build_release
[[ -f $MODEL/model.safetensors ]] || { echo "missing the bundled model in $MODEL" >&2; exit 1; }
mkdir -p runs

echo "==> perplexity of the teacher on the test novel (Persuasion)"
mpirun -np "$NP" "$SQUEEZE" eval --model "$MODEL" --data data/corpus/test.txt --json | tee runs/teacher-eval.json
echo "==> mpirun -np $NP squeeze compress --recipe $RECIPE (distillation steps x $SCALE)"
mpirun -np "$NP" "$SQUEEZE" compress --model "$MODEL" --recipe "$RECIPE" --out "$OUT" \
    --data data/corpus/train.txt --valid data/corpus/valid.txt --distill-scale "$SCALE"
echo "==> perplexity of the compressed model"
mpirun -np "$NP" "$SQUEEZE" eval --model "$OUT" --data data/corpus/test.txt --json | tee runs/compressed-eval.json
echo "==> stable-rank analysis (plot: $OUT/stable-rank.svg)"
"$SQUEEZE" analyze --model "$OUT" --compare "$MODEL" --plot "$OUT/stable-rank.svg" | tail -3

python3 - "$MODEL" "$OUT" <<'PY'
import json, os, sys
model, out = sys.argv[1], sys.argv[2]
t = json.load(open("runs/teacher-eval.json")); c = json.load(open("runs/compressed-eval.json"))
def size(d): return os.path.getsize(os.path.join(d, "model.safetensors"))
print()
print(f"{'model':<28}{'test perplexity':>16}{'ratio':>8}{'weights bytes':>15}")
print(f"{'teacher (' + model + ')':<28}{t['perplexity']:>16.3f}{1:>8.3f}{size(model):>15,}")
print(f"{'compressed (' + out + ')':<28}{c['perplexity']:>16.3f}{c['perplexity'] / t['perplexity']:>8.3f}{size(out):>15,}")
PY
