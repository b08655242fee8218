#!/usr/bin/env bash
# The memory estimate (`compress --dry-run`) against the peak resident memory a real run measures
# (`compress --json`'s peak_rss_bytes, VmHWM), within 10%, for a Kronecker and a low-rank
# distillation: the components' saved state and scratch live in the activation arena and are counted.
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
python3 - "$ROOT/assets/configs/gpt2.json" "$WORK/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c.update(n_embd=256, n_layer=4, n_head=4, n_positions=256, n_ctx=256, n_inner=1024)
json.dump(c, open(sys.argv[2], "w"))
PY
"$SQUEEZE" init --config "$WORK/config.json" --tokenizer "$ROOT/assets/gpt2" --out "$WORK/model" > /dev/null || fail init
cat > "$WORK/kronecker.yaml" <<'YAML'
stages:
  - kronecker: {targets: ["h.*.mlp.c_fc"], factors: [16, 32], terms: 2}
    distill: {steps: 2, batch: 8, seq: 256, micro_batch: 8, eval_tokens: 600}
YAML
cat > "$WORK/lowrank.yaml" <<'YAML'
stages:
  - lowrank: {targets: ["h.*.mlp.*", "h.*.attn.*"], rank_ratio: 0.5}
    distill: {steps: 2, batch: 8, seq: 256, micro_batch: 8, eval_tokens: 600}
YAML
for r in kronecker lowrank; do
    args=(--model "$WORK/model" --recipe "$WORK/$r.yaml" --out "$WORK/out-$r" --data "$TEXT")
    "$SQUEEZE" compress "${args[@]}" --dry-run --json > "$WORK/$r-plan.json" 2> "$WORK/$r.err" || { cat "$WORK/$r.err"; fail "$r: dry run"; }
    "$SQUEEZE" compress "${args[@]}" --json > "$WORK/$r-run.json" 2>> "$WORK/$r.err" || { cat "$WORK/$r.err"; fail "$r: run"; }
    python3 - "$WORK/$r-plan.json" "$WORK/$r-run.json" "$r" <<'PY' || fail "$r: estimate and measured peak differ by more than 10%"
import json, sys
plan = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
run = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
estimate = max(m["per_node_bytes"] for m in plan["memory"])
measured = run["peak_rss_bytes"]
ratio = estimate / measured
print(f"{sys.argv[3]}: estimate {estimate / 2**20:.0f} MiB, measured peak {measured / 2**20:.0f} MiB, ratio {ratio:.3f}")
sys.exit(0 if abs(ratio - 1) <= 0.10 else 1)
PY
done
echo "ok: the estimates of a Kronecker and a low-rank distillation are within 10% of the measured peaks"
