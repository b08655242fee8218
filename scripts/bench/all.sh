#!/usr/bin/env bash
# Every benchmark, each printing ratios measured in the same run: BLAS/LAPACK wrappers, MPI
# all-reduce, the model's forward/backward, the KD step on 1 and 2 ranks, factorizations, and
# PyTorch's figures on this machine when /work/venv (or $PYTHON with torch) is available.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$SQUEEZE_ROOT"
ensure_packages
build_release
echo "== squeeze bench blas";            "$SQUEEZE" bench blas
echo "== squeeze bench allreduce (np=2)"; mpirun -np 2 "$SQUEEZE" bench allreduce
echo "== squeeze bench model";           "$SQUEEZE" bench model
echo "== KD step scaling";               bash scripts/bench/train_scaling.sh
echo "== squeeze bench factor";          "$SQUEEZE" bench factor
PY=${PYTHON:-/work/venv/bin/python}
if "$PY" -c "import torch, transformers" 2>/dev/null; then
    echo "== PyTorch on the same machine"; "$PY" scripts/bench/pytorch_baseline.py
else
    echo "(PyTorch baseline skipped: no python with torch + transformers; set PYTHON)"
fi
