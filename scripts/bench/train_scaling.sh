#!/usr/bin/env bash
# KD step throughput on 1 rank x 2 BLAS threads vs 2 ranks x 1 thread (same global batch),
# measured in one run of this script: prints both and their ratio.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
ensure_packages
build_release
one=$(OPENBLAS_NUM_THREADS=2 mpirun -np 1 "$SQUEEZE" bench train --json "$@")
two=$(OPENBLAS_NUM_THREADS=1 mpirun -np 2 -x OPENBLAS_NUM_THREADS "$SQUEEZE" bench train --json "$@")
python3 - "$one" "$two" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for r in (a, b):
    print(f"np={r['ranks']} x {r['threads_per_rank']} thread(s): {r['tokens_per_s']:.1f} tokens/s ({r['percent_of_peak']:.1f}% of peak), "
          f"no overlap {r['tokens_per_s_no_overlap']:.1f}; all-reduce {r['allreduce_seconds']*1e3:.2f} ms vs bare {r['bare_allreduce_seconds']*1e3:.2f} ms "
          f"({r['allreduce_ratio']:.3f}x)")
print(f"np=2 / np=1 throughput: {b['tokens_per_s'] / a['tokens_per_s']:.3f}x")
PY
