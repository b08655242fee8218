#!/usr/bin/env bash
# This tree's speed against an earlier commit's, measured in one run: builds REV (release) in a
# worktree under runs/regression/, then runs `squeeze bench model` (distilgpt2 shape, forward and
# forward+backward) and `squeeze bench train` (the KD step on one rank) with each binary in turn,
# ROUNDS times (ABAB...), and prints the best figure of each and this tree's / REV's ratio.
#
#   scripts/bench/regression.sh REV [ROUNDS]     (e.g. 62cdaeb, the end of the first wave; ROUNDS 2)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
REV=${1:?usage: scripts/bench/regression.sh REV [ROUNDS]}
ROUNDS=${2:-2}
ensure_packages
build_release
NEW=$SQUEEZE
SHA=$(git rev-parse --short "$REV")
OLD_TREE=runs/regression/$SHA
if [[ ! -x $OLD_TREE/.build/release/squeeze ]]; then
    rm -rf "$OLD_TREE"; git worktree prune
    git worktree add --detach "$OLD_TREE" "$SHA" >&2
    (cd "$OLD_TREE" && swift build -c release --product squeeze 2>&1 | tail -1) >&2
fi
OLD=$OLD_TREE/.build/release/squeeze
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-$(nproc)}
: > runs/regression/results.jsonl
for ((i = 0; i < ROUNDS; i++)); do
    for who in old new; do
        bin=$OLD; [[ $who == new ]] && bin=$NEW
        for bench in model train; do
            echo "==> round $((i + 1)) $who bench $bench" >&2
            line=$("$bin" bench "$bench" --json | tail -1)
            echo "{\"who\": \"$who\", \"bench\": \"$bench\", \"result\": $line}" >> runs/regression/results.jsonl
        done
    done
done
python3 - runs/regression/results.jsonl "$SHA" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def get(r, *keys):   # snake_case now, camelCase in older builds
    for k in keys:
        if k in r: return r[k]
    raise KeyError(keys)
figures = {"forward tokens/s": ("model", ("forward_tokens_per_second", "forwardTokensPerSecond")),
           "forward+backward tokens/s": ("model", ("train_tokens_per_second", "trainTokensPerSecond")),
           "KD step tokens/s (bench train, 1 rank)": ("train", ("tokens_per_s", "tokensPerS"))}
print(f"| figure | {sys.argv[2]} (best) | this tree (best) | this / {sys.argv[2]} |")
print("|---|---|---|---|")
for name, (bench, keys) in figures.items():
    best = {w: max(get(r["result"], *keys) for r in rows if r["who"] == w and r["bench"] == bench) for w in ("old", "new")}
    print(f"| {name} | {best['old']:.1f} | {best['new']:.1f} | {best['new'] / best['old']:.3f}x |")
PY
