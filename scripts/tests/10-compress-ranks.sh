#!/usr/bin/env bash
# `squeeze compress` with every method and distillation gives the same model on 1 and 2 ranks
# (perplexity within 1e-3), including the ScaLAPACK path for the embedding's SVD; the output
# evaluates, generates, analyzes and exports.
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
cat > "$WORK/r.yaml" <<'YAML'
calibration: {samples: 8, seq: 16}
stages:
  - prune: {sparsity: 0.5, schedule: cubic, frequency: 2, end: 0.5, targets: ["h.0.mlp.*"]}
    distill: {steps: 6, batch: 4, seq: 16, lr: 1.0e-3, micro_batch: 2}
  - prune: {sparsity: 0.5, method: sparsegpt, targets: ["h.1.mlp.c_fc"]}
  - kronecker: {targets: ["h.*.attn.c_proj"], factors: auto, terms: 2}
  - lowrank: {targets: ["wte", "h.*.attn.c_attn"], rank_ratio: 0.5, progressive: 2}
    distill: {steps: 4, batch: 4, seq: 16, lr: 1.0e-3, micro_batch: 1}
YAML
for np in 1 2; do
    # np=2 also exercises --no-shared-fs: rank 0 reads model and data and broadcasts them.
    extra=(); ((np == 2)) && extra=(--no-shared-fs)
    mpirun -np $np "$SQUEEZE" compress --model "$TINY" --recipe "$WORK/r.yaml" --out "$WORK/out$np" --data "$TEXT" \
        --scalapack-min 100000 "${extra[@]}" --json > "$WORK/c$np.json" 2> "$WORK/c$np.err" || { cat "$WORK/c$np.err"; fail "compress on $np rank(s)"; }
    "$SQUEEZE" eval --model "$WORK/out$np" --data "$TEXT" --json > "$WORK/e$np.json"
done
p1=$(json_field perplexity < "$WORK/e1.json"); p2=$(json_field perplexity < "$WORK/e2.json")
python3 -c "import sys; a, b = $p1, $p2; sys.exit(0 if abs(a - b) / a < 1e-3 else 1)" || fail "np=1 perplexity $p1 vs np=2 $p2"
echo "np=1 perplexity $p1, np=2 $p2"
"$SQUEEZE" generate --model "$WORK/out2" --prompt "It is a truth" --max-tokens 4 --temperature 0 > /dev/null || fail generate
"$SQUEEZE" analyze --model "$WORK/out2" --compare "$TINY" --plot "$WORK/a.svg" > /dev/null || fail analyze
grep -q "<svg" "$WORK/a.svg" || fail "no svg"
"$SQUEEZE" export --model "$WORK/out2" --dense --out "$WORK/dense" > /dev/null || fail export
pd=$("$SQUEEZE" eval --model "$WORK/dense" --data "$TEXT" --json | json_field perplexity)
python3 -c "import sys; sys.exit(0 if abs($pd - $p2) / $p2 < 1e-5 else 1)" || fail "exported perplexity $pd vs $p2"
# One-shot factorizations (LAPACK on the owner rank, broadcast) are bitwise identical on 1 and 2 ranks.
cat > "$WORK/oneshot.yaml" <<'YAML'
stages:
  - kronecker: {targets: ["h.*.attn.c_proj"], factors: auto, terms: 2}
  - lowrank: {targets: ["h.*.mlp.*", "h.*.attn.c_attn"], rank_ratio: 0.5}
YAML
for np in 1 2; do mpirun -np $np "$SQUEEZE" compress --model "$TINY" --recipe "$WORK/oneshot.yaml" --out "$WORK/one$np" --json > /dev/null; done
cmp -s "$WORK/one1/model.safetensors" "$WORK/one2/model.safetensors" || fail "one-shot factorization differs between 1 and 2 ranks"
echo "ok: compress on 1 and 2 ranks agree (one-shot factorizations bitwise); export keeps the perplexity"
