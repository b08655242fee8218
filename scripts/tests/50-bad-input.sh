#!/usr/bin/env bash
# Malformed or hostile inputs end with a clear error and an exit status in 1..127 within 30 s:
# absurd config sizes, NaN weights, a distillation whose loss overflows, and ranks that start on
# different copies of the model or data (no shared filesystem, a stale copy on one host).
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"

# expect_failure NAME PATTERN COMMAND...: non-zero exit below 128 within 30 s, PATTERN in the output.
expect_failure() {
    local name=$1 pattern=$2; shift 2
    local start status=0
    start=$(date +%s)
    timeout -k 5 30 "$@" > "$WORK/out.log" 2>&1 || status=$?
    local took=$(( $(date +%s) - start ))
    ((status != 124 && status != 137)) || fail "$name: no answer within 30 s"
    ((status > 0 && status < 128)) || { cat "$WORK/out.log"; fail "$name: exit status $status (expected 1..127)"; }
    grep -qE "$pattern" "$WORK/out.log" || { cat "$WORK/out.log"; fail "$name: message does not match /$pattern/"; }
    echo "ok: $name -> exit $status in ${took}s: $(grep -m1 -E "$pattern" "$WORK/out.log" | cut -c1-200)"
}

# A copy of the tiny model with one config.json field replaced.
with_config() {
    local dir=$WORK/cfg-$1-$2
    rm -rf "$dir"; cp -r "$TINY" "$dir"
    python3 - "$dir/config.json" "$1" "$2" <<'PY'
import json, sys
path, key, value = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = json.load(open(path))
cfg[key] = json.loads(value)
json.dump(cfg, open(path, "w"), indent=2)
PY
    echo "$dir"
}

expect_failure "n_layer 2^31" "n_layer" "$SQUEEZE" eval --model "$(with_config n_layer 2147483648)" --data "$TEXT"
expect_failure "n_layer 10^12" "n_layer" "$SQUEEZE" eval --model "$(with_config n_layer 1000000000000)" --data "$TEXT"
expect_failure "n_layer 3 for 2 blocks" "n_layer = 3" "$SQUEEZE" eval --model "$(with_config n_layer 3)" --data "$TEXT"
expect_failure "n_embd mismatch" "n_embd = 32.*wpe.weight" "$SQUEEZE" eval --model "$(with_config n_embd 32)" --data "$TEXT"
expect_failure "vocab_size mismatch" "vocab_size = 1000.*wte.weight" "$SQUEEZE" eval --model "$(with_config vocab_size 1000)" --data "$TEXT"

# A NaN in h.0.mlp.c_fc.weight: refused naming the tensor, evaluated only when allowed explicitly.
NAN=$WORK/nan
cp -r "$TINY" "$NAN"
python3 - "$NAN/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
key = next(k for k in header if k.endswith("h.0.mlp.c_fc.weight"))
begin = 8 + n + header[key]["data_offsets"][0]
data[begin + 20:begin + 24] = struct.pack("<f", float("nan"))
open(path, "wb").write(data)
PY
expect_failure "NaN weight" "h.0.mlp.c_fc.weight.*nan" "$SQUEEZE" eval --model "$NAN" --data "$TEXT"
"$SQUEEZE" eval --model "$NAN" --data "$TEXT" --allow-non-finite --json > "$WORK/nan.json" 2>&1 || fail "--allow-non-finite still refused"
echo "ok: --allow-non-finite evaluates it: $(tail -1 "$WORK/nan.json" | cut -c1-80)"

# A distillation whose loss overflows: a teacher with finite but huge final-LayerNorm gains
# (3e38) has infinite logits, so the KD term is NaN from the first step.
HUGE=$WORK/huge
cp -r "$TINY" "$HUGE"
python3 - "$HUGE/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
key = next(k for k in header if k.endswith("ln_f.weight"))
b, e = header[key]["data_offsets"]
data[8 + n + b:8 + n + e] = struct.pack("<f", 3e38) * ((e - b) // 4)
open(path, "wb").write(data)
PY
cat > "$WORK/overflow.yaml" <<'YAML'
stages:
  - prune: {sparsity: 0.5, targets: ["h.*.mlp.c_fc"]}
    distill: {steps: 20, batch: 4, seq: 16, micro_batch: 2, eval_tokens: 64, checkpoint_every: 1}
YAML
expect_failure "overflowing distillation" "stage 1/1 prune: non-finite loss or gradient at step 1" \
    "$SQUEEZE" compress --model "$TINY" --teacher "$HUGE" --recipe "$WORK/overflow.yaml" --data "$TEXT" --out "$WORK/overflow"
[[ ! -e $WORK/overflow/model.safetensors ]] || fail "weights were written after a non-finite loss"

# Ranks that start on different copies: rank 1 reads a model with one weight changed.
STALE=$WORK/stale
cp -r "$TINY" "$STALE"
python3 - "$STALE/model.safetensors" <<'PY'
import json, struct, sys
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
key = next(k for k in header if k.endswith("h.1.attn.c_proj.weight"))
begin = 8 + n + header[key]["data_offsets"][0]
data[begin:begin + 4] = struct.pack("<f", 0.5)
open(path, "wb").write(data)
PY
# A quantize stage that a planned form cannot take (a rank-8 factor is quantized along its 8
# inputs, not a multiple of Q4_0's 32): refused before the first stage runs, naming the layer.
cat > "$WORK/lowrank-q4.yaml" <<'YAML'
stages:
  - lowrank: {targets: ["wte"], rank: 8}
    distill: {steps: 2, batch: 2, seq: 16}
  - quantize: {format: q4_0, targets: ["wte"]}
YAML
expect_failure "quantizing a rank-8 factor" "layer wte: wte.lowrank.w0 has 8 inputs per output.*not a multiple of 32" \
    "$SQUEEZE" compress --model "$TINY" --recipe "$WORK/lowrank-q4.yaml" --out "$WORK/lowrank-q4" --data "$TEXT"
[[ ! -e "$WORK/lowrank-q4/checkpoint" ]] || fail "quantizing a rank-8 factor: a stage ran before the refusal"

cat > "$WORK/oneshot.yaml" <<'YAML'
stages:
  - prune: {sparsity: 0.5, targets: ["h.*.mlp.c_fc"]}
YAML
cat > "$WORK/per-rank.sh" <<SH
#!/bin/bash
# Rank 1 sees the stale copy, as a host without a shared filesystem might (every rank reads the
# model it compresses; read-only models and the data are read once per node and shared).
if [[ \$OMPI_COMM_WORLD_RANK == 1 ]]; then m=$STALE; else m=$TINY; fi
exec "$SQUEEZE" compress --model "\$m" --recipe "$WORK/oneshot.yaml" --out "$WORK/stale-out"
SH
chmod +x "$WORK/per-rank.sh"
expect_failure "ranks with different models" "rank 1 started with different contents of model" mpirun -np 2 "$WORK/per-rank.sh"
