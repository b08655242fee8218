#!/usr/bin/env bash
# Scaling of Squeeze's two parallel workloads over (ranks x BLAS threads per rank), measured in
# one run of this script on this machine:
#   factorize-lowrank     one-shot truncated SVD (rank_ratio 0.25) of every block linear and wte,
#                         the layer jobs spread over ranks by cost, wte by the planner (TSQR)
#   factorize-kronecker   one-shot Kronecker sums (terms auto, budget 0.25) of every block linear,
#                         wte by low rank as above
#   factorize-scalapack   factorize-lowrank with wte forced through ScaLAPACK p?gesvd
#                         (--scalapack-min), at np >= 2 only
#   distill               distillation steps (teacher = the model, global batch 8 x 256): the
#                         median step of --steps after one warm-up step
# at (np, threads per rank) = 1x1, 1x2, 2x1, 4x1 (np=4 oversubscribes a 2-core machine: 4 ranks
# share 2 cores; its figures show the overhead of oversubscription, not scaling).
# For each point: seconds (factorize: the compression methods alone, from compress's
# compression_seconds; distill: one step), speedup against 1x1, efficiency = speedup / cores in
# use (np x threads, at most the machine's cores), bytes moved per rank through Squeeze's
# collectives (Communicator.trafficBytes: per job, or per step), and peak resident memory of the
# largest rank (scripts/bench/peakmem.py).
#
#   scripts/bench/scaling.sh [--json] [--model DIR] [--points "1x1 1x2 2x1 4x1"] [--steps N] [--no-scalapack]
#                            [--benches "factorize-lowrank ..."] [--append]
# (factorize-scalapack runs at np = 2 only: one ScaLAPACK SVD of wte takes minutes.)
#
# On a cluster: MPIRUN_ARGS="--hostfile hosts --map-by ppr:1:socket" scripts/bench/scaling.sh --points
# "1x16 2x16 4x16 8x16" (inside an allocation; see cluster/README.md). peak_rss_mb then covers the
# ranks on the launching node only.
# The default model is a distilgpt2-shaped random one (squeeze init, cached in runs/scaling/).
# Writes docs/scaling-results.md (table) and docs/scaling.svg (speedup plot); with --json prints
# one JSON line per point: {"bench", "np", "threads", "seconds", "bytes", "peak_rss_mb", ...}.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
JSON=0 MODEL="" POINTS="1x1 1x2 2x1 4x1" STEPS=4 SCALAPACK=1 APPEND=0
BENCHES="factorize-lowrank factorize-kronecker factorize-scalapack distill"
while (($#)); do
    case $1 in
        --json) JSON=1 ;;
        --model) MODEL=$2; shift ;;
        --points) POINTS=$2; shift ;;
        --steps) STEPS=$2; shift ;;
        --no-scalapack) SCALAPACK=0 ;;
        --benches) BENCHES=$2; shift ;;
        --append) APPEND=1 ;;
        *) echo "scaling.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
((STEPS >= 2)) || { echo "scaling.sh: --steps must be at least 2 (one warm-up)" >&2; exit 2; }
ensure_packages
python3 scripts/fetch_data.py > /dev/null
build_release
OUT=runs/scaling
mkdir -p "$OUT"
if [[ -z $MODEL ]]; then
    MODEL=$OUT/distilgpt2
    [[ -f $MODEL/model.safetensors ]] || "$SQUEEZE" init --config assets/configs/distilgpt2.json --out "$MODEL" >&2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/squeeze-scaling.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
cat > "$WORK/factorize-lowrank.yaml" <<'YAML'
stages:
  - lowrank: {targets: ["wte", "h.*.attn.*", "h.*.mlp.*"], rank_ratio: 0.25}
YAML
cat > "$WORK/factorize-kronecker.yaml" <<'YAML'
stages:
  - kronecker: {targets: ["h.*.attn.*", "h.*.mlp.*"], terms: auto, budget: 0.25}
  - lowrank: {targets: ["wte"], rank_ratio: 0.25}
YAML
cat > "$WORK/distill.yaml" <<YAML
stages:
  - distill: {steps: $STEPS, batch: 8, seq: 256, micro_batch: 1, eval_tokens: 256}
YAML
RESULTS=$OUT/results.jsonl
((APPEND)) || : > "$RESULTS"
# point BENCH NP THREADS [extra compress args]: one measurement, appended to $RESULTS.
point() {
    local bench=$1 np=$2 threads=$3; shift 3
    local recipe=$WORK/${bench/factorize-scalapack/factorize-lowrank}.yaml data=()
    [[ $bench == distill ]] && data=(--data data/corpus/train.txt --valid data/corpus/valid.txt)
    echo "==> $bench np=$np threads=$threads" >&2
    local mem status=0
    # The command's own output goes to out.jsonl; peakmem.py's JSON line is the last of stdout.
    mem=$(OPENBLAS_NUM_THREADS=$threads python3 scripts/bench/peakmem.py -- /bin/bash -c 'out=$1; shift; exec "$@" > "$out"' _ "$WORK/out.jsonl" \
          mpirun --bind-to none ${MPIRUN_ARGS:-} -np "$np" -x OPENBLAS_NUM_THREADS \
          "$SQUEEZE" compress --model "$MODEL" --recipe "$recipe" --out "$WORK/out" "${data[@]}" --json "$@" 2> "$WORK/err.log" | tail -1) || status=$?
    if ((status != 0)); then tail -5 "$WORK/err.log" >&2; echo "scaling.sh: $bench np=$np x $threads failed" >&2; exit 1; fi
    python3 - "$bench" "$np" "$threads" "$mem" "$WORK/out.jsonl" >> "$RESULTS" <<'PY'
import json, statistics, sys
bench, np_, threads, mem, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5]
lines = [json.loads(l) for l in open(path) if l.startswith("{")]
summary, steps = lines[-1], [l for l in lines[:-1] if "step" in l]
if bench == "distill":
    timed = steps[1:]   # the first step warms up
    tokens = 8 * 256
    seconds = statistics.median(tokens / s["tokens_per_second"] for s in timed)
    nbytes = timed[-1].get("bytes_communicated", 0)
else:
    seconds, nbytes = summary["compression_seconds"], summary["bytes_communicated"]
print(json.dumps({"bench": bench, "np": np_, "threads": threads, "seconds": round(seconds, 4), "bytes": nbytes,
                  "peak_rss_mb": mem["peak_rss_mb"], "node_peak_mb": mem.get("node_peak_mb"), "wall_seconds": mem["seconds"]}))
PY
    tail -1 "$RESULTS" >&2
}
for bench in $BENCHES; do
    for p in $POINTS; do
        np=${p%x*} threads=${p#*x}
        if [[ $bench == factorize-scalapack ]]; then
            ((SCALAPACK && np == 2)) || continue
            point "$bench" "$np" "$threads" --scalapack-min 20000000
        else
            point "$bench" "$np" "$threads"
        fi
    done
done
python3 scripts/bench/scaling_report.py "$RESULTS" docs/scaling-results.md docs/scaling.svg "$(nproc)" >&2
((JSON)) && cat "$RESULTS" || cat docs/scaling-results.md
