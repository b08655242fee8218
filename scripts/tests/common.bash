# Sourced by the CLI tests: the squeeze binary, a scratch directory and small helpers.
set -euo pipefail
ROOT=${SQUEEZE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BIN=${SQUEEZE_BIN_PATH:-$(cd "$ROOT" && swift build --show-bin-path)}
SQUEEZE=$BIN/squeeze
[[ -x $SQUEEZE ]] || { echo "no squeeze binary in $BIN (swift build first)" >&2; exit 1; }
TINY=$ROOT/Tests/Fixtures/tiny-gpt2
TEXT=$ROOT/Tests/Fixtures/text/pride-and-prejudice-ch1.txt
WORK=$(mktemp -d "${TMPDIR:-/tmp}/squeeze-cli.XXXXXX")
export SQUEEZE_CACHE=$WORK/cache OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.readlines()[-1])['$1'])"; }
