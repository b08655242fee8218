#!/usr/bin/env bash
# Squeeze's test script (CI runs it through .ci/run). Runnable from any directory; idempotent.
#
#   1. system packages   installs missing apt packages when root (nothing when all are present)
#   2. structure         scripts/check_structure.py: file and function lengths, form capabilities
#                        instead of string matching and casts, docs/ARCHITECTURE.md's symbols exist
#   3. build             swift build --build-tests
#   4. single-rank tests swift test --skip-build --skip MultiRank
#      kernel fallbacks  PackedKernelTests again under SQUEEZE_ISA=avx2 and SQUEEZE_ISA=generic (the
#                        C kernels' dispatch cap, Sources/CKernels/include/squeeze_kernels.h), so
#                        the AVX2 and scalar paths also run through the environment knob
#   5. multi-rank tests  the test bundle's MultiRank* classes under mpirun, -np 2 and -np 4
#   6. CLI tests         every scripts/tests/*.sh, in name order (each must exit 0)
#   7. summary           one line per phase with its time; exit status 1 if anything failed
#
# Options:
#   --sanitize address|thread
#       Builds with `swift build --build-tests --sanitize=address` (or thread) into its own scratch
#       path (<scratch>-asan / <scratch>-tsan, by default .build-asan / .build-tsan) and runs only
#       the single-rank tests under AddressSanitizer (with LeakSanitizer) or ThreadSanitizer, with
#       the suppression files of scripts/sanitizers/ (third-party code only; see their comments).
#       The multi-rank and CLI phases are not run (the summary says so). Under `thread`, OpenBLAS
#       runs single-threaded (it is not instrumented) and SQUEEZE_LOOP_CHECK_THREADS=2 runs every
#       parallelFor of ours as 2 chunks on 2 threads (Sources/Kernels/Parallel.swift). Any sanitizer
#       report fails the phase; the summary counts reports and suppressed ones. Sanitizer options
#       already in ASAN_OPTIONS, LSAN_OPTIONS or TSAN_OPTIONS are appended (so they win).
#
# Environment (all optional):
#   SQUEEZE_SCRATCH_PATH   SwiftPM build directory (default: the package's .build; --sanitize
#                          appends -asan or -tsan)
#   SQUEEZE_TEST_NPS       rank counts for the multi-rank tests (default: "2 4")
#   SQUEEZE_MPI_TIMEOUT    seconds before one mpirun is killed (default: 600)
#   SQUEEZE_TEST_WATCHDOG  seconds one multi-rank test may take before its rank exits (default: 300)
#   SQUEEZE_LOOP_CHECK_THREADS
#                          threads of our own parallel loops under --sanitize thread (default: 2)
#
# For scripts/tests/*.sh this exports SQUEEZE_ROOT, SQUEEZE_BIN_PATH (the debug build's products)
# and the Open MPI settings of scripts/lib.sh, so a plain `mpirun -np N ...` works there too.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export LC_ALL=C
# Package list and installer, and the Open MPI settings for one machine (see lib.sh).
source scripts/lib.sh
usage() {
    echo "usage: scripts/test.sh [--sanitize address|thread]" >&2
    if (($#)); then echo "error: $*" >&2; fi
    exit 2
}
SANITIZE=""
while (($#)); do
    case $1 in
        --sanitize) (($# >= 2)) || usage "--sanitize needs 'address' or 'thread'"; SANITIZE=$2; shift 2 ;;
        --sanitize=*) SANITIZE=${1#--sanitize=}; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) usage "unknown argument '$1'" ;;
    esac
done
case $SANITIZE in
    "" | address | thread) ;;
    *) usage "--sanitize takes 'address' or 'thread', not '$SANITIZE'" ;;
esac

NPS=${SQUEEZE_TEST_NPS:-2 4}
MPI_TIMEOUT=${SQUEEZE_MPI_TIMEOUT:-600}
SCRATCH=()
if [[ -n $SANITIZE ]]; then
    # Its own build directory: sanitized objects must not mix with (or replace) the normal build.
    SCRATCH=(--scratch-path "${SQUEEZE_SCRATCH_PATH:-$ROOT/.build}-${SANITIZE:0:1}san")
elif [[ -n ${SQUEEZE_SCRATCH_PATH:-} ]]; then
    SCRATCH=(--scratch-path "$SQUEEZE_SCRATCH_PATH")
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/squeeze-test.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

PHASES=() STATUSES=() TIMES=()
FAILED=0
PHASE_NO=0

now() { date +%s.%N; }

header() {
    PHASE_NO=$((PHASE_NO + 1))
    printf '\n==> [%d] %s\n' "$PHASE_NO" "$1"
}

# record NAME STATUS(pass|FAIL|skipped) START
record() {
    local elapsed
    elapsed=$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    PHASES+=("$1") STATUSES+=("$2") TIMES+=("$elapsed")
    if [[ $2 == FAIL ]]; then FAILED=1; fi
    printf -- '--- %s: %s (%s s)\n' "$1" "$2" "$elapsed"
}

# phase NAME COMMAND...: runs the command, records pass/FAIL and its time (never exits the script).
phase() {
    local name=$1; shift
    header "$name"
    printf '$ %s\n' "$*"
    local start status=0
    start=$(now)
    "$@" || status=$?
    if ((status == 0)); then record "$name" pass "$start"; else echo "exit status $status"; record "$name" FAIL "$start"; fi
    return 0
}

skip() {
    header "$1"
    echo "skipped: $2"
    PHASES+=("$1") STATUSES+=(skipped) TIMES+=(0.0)
    FAILED=1
}

# omit NAME REASON: a phase this mode does not run by design (listed in the summary, not a failure).
omit() {
    header "$1"
    echo "not run: $2"
    PHASES+=("$1") STATUSES+=("not run") TIMES+=(0.0)
}

# --- 1. system packages -------------------------------------------------------------------------

# --- 4. multi-rank tests ------------------------------------------------------------------------

# multi_rank NP: the bundle's MultiRank* classes on NP ranks; every rank must run them all and pass.
multi_rank() {
    local np=$1 log="$LOGS/multirank-$np.log"
    local oversubscribe=()
    if ((np > $(nproc))); then oversubscribe=(--oversubscribe); fi
    local cmd=(timeout --kill-after=30 "$MPI_TIMEOUT"
               mpirun --allow-run-as-root -np "$np" "${oversubscribe[@]}" --bind-to none --tag-output
               -x "SQUEEZE_TEST_NP=$np" -x OPENBLAS_NUM_THREADS=1
               -x "SQUEEZE_TEST_WATCHDOG=${SQUEEZE_TEST_WATCHDOG:-300}"
               "$XCTEST" "$MULTIRANK_FILTER")
    printf '$ %s\n' "${cmd[*]}"
    local status=0
    { "${cmd[@]}" 2>&1 | tee "$log"; status=${PIPESTATUS[0]}; } || true
    if ((status == 124 || status == 137)); then
        echo "mpirun did not finish within $MPI_TIMEOUT s (timeout killed it)"
        return 1
    fi
    if ((status == 97)); then echo "a rank's test watchdog fired (a test hung); see above"; fi
    if ((status != 0)); then return "$status"; fi
    # A filter that matched nothing would also "pass": every rank must have run every test.
    local passed ran
    passed=$(grep -c "Test Suite 'Selected tests' passed" "$log" || true)
    ran=$(grep -cE "Executed $MULTIRANK_COUNT tests?, with 0 failures" "$log" || true)
    if ((passed != np || ran < np)); then
        echo "expected $np ranks to each pass $MULTIRANK_COUNT tests; saw $passed passing ranks"
        return 1
    fi
    echo "all $np ranks passed $MULTIRANK_COUNT tests"
}

# --- 3b. single-rank tests under a sanitizer (--sanitize) ---------------------------------------

# sanitized_tests: swift test --skip MultiRank on the sanitized build, with the sanitizer's options
# and suppressions; fails on any report (even if the exit status were 0) and prints the counts.
sanitized_tests() {
    local log="$LOGS/sanitized.log" supp="$ROOT/scripts/sanitizers" env=()
    case $SANITIZE in
        address)
            # fast_unwind_on_malloc=0: the suppressions match frames inside Open MPI, which has no
            # frame pointers (see lsan.supp).
            env=("ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
                 "LSAN_OPTIONS=suppressions=$supp/lsan.supp:print_suppressions=1${LSAN_OPTIONS:+:$LSAN_OPTIONS}") ;;
        thread)
            # OpenBLAS is not instrumented: one BLAS thread; our own loops always split over two
            # threads (see tsan.supp). history_size=7: the longest access history, so that the
            # earlier access of a race in a long loop still has a stack (else TSan drops the report).
            env=("TSAN_OPTIONS=suppressions=$supp/tsan.supp:print_suppressions=1:history_size=7:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
                 OPENBLAS_NUM_THREADS=1 "SQUEEZE_LOOP_CHECK_THREADS=${SQUEEZE_LOOP_CHECK_THREADS:-2}") ;;
    esac
    local cmd=(swift test --skip-build --skip MultiRank --sanitize="$SANITIZE" "${SCRATCH[@]}")
    printf '$ %s %s\n' "${env[*]}" "${cmd[*]}"
    local status=0
    { env "${env[@]}" "${cmd[@]}" 2>&1 | tee "$log"; status=${PIPESTATUS[0]}; } || true
    # Reports: each TSan warning, each ASan error, each leak record (direct or indirect) LSan prints.
    local reports suppressed
    reports=$(grep -cE '^WARNING: ThreadSanitizer:|^==[0-9]+==ERROR: AddressSanitizer:|^(Direct|Indirect) leak of' "$log" || true)
    # Suppressed: the tables LSan ("Suppressions used:") and TSan ("Matched N suppressions") print.
    suppressed=$(awk '/^Suppressions used:|ThreadSanitizer: Matched [0-9]+ suppressions/ { t = 1; next }
                      t && /^ *count / { next }
                      t && /^ *[0-9]+ / { n += $1; next } { t = 0 } END { print n + 0 }' "$log")
    local ran
    ran=$(grep -oE 'Executed [0-9]+ tests?, with [0-9]+ failures?' "$log" | tail -1 || true)
    local unit="report(s)"
    if [[ $SANITIZE == address ]]; then unit="leaked allocation(s), see \"Suppressions used\" above"; fi
    echo "sanitizer ($SANITIZE): ${ran:-no XCTest summary}; $reports report(s); $suppressed suppressed $unit"
    if ((status == 0 && reports > 0)); then status=1; fi
    return "$status"
}

# --- summary ------------------------------------------------------------------------------------

# summary: one line per phase with its time; exits 1 if anything failed, else 0.
summary() {
    printf '\n==> summary\n'
    for i in "${!PHASES[@]}"; do
        printf '  %-8s %7s s  %s\n' "${STATUSES[$i]}" "${TIMES[$i]}" "${PHASES[$i]}"
    done
    if ((FAILED)); then
        echo "FAILED"
        exit 1
    fi
    echo "all passed"
    exit 0
}

# --- run ----------------------------------------------------------------------------------------

echo "Squeeze tests in $ROOT"
phase "system packages" ensure_packages
if [[ ${STATUSES[-1]} == FAIL ]]; then
    echo "cannot build without the system packages"
    exit 1
fi
for tool in swift mpirun timeout; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is not on PATH"; exit 1; }
done
phase "structure (scripts/check_structure.py)" python3 scripts/check_structure.py

if [[ -n $SANITIZE ]]; then
    phase "build (swift build --build-tests --sanitize=$SANITIZE)" \
        swift build --build-tests --sanitize="$SANITIZE" "${SCRATCH[@]}"
    if [[ ${STATUSES[-1]} == pass ]]; then
        phase "single-rank tests under --sanitize=$SANITIZE (swift test --skip MultiRank)" sanitized_tests
    else
        skip "tests" "the build failed"
    fi
    omit "multi-rank tests" "--sanitize runs the single-rank tests only"
    omit "CLI tests (scripts/tests/*.sh)" "--sanitize runs the single-rank tests only"
    summary
fi

phase "build (swift build --build-tests)" swift build --build-tests "${SCRATCH[@]}"
if [[ ${STATUSES[-1]} == pass ]]; then
    phase "single-rank tests (swift test --skip MultiRank)" \
        swift test --skip-build --skip MultiRank "${SCRATCH[@]}"
    # The packed-weight C kernels pick AVX-512 / AVX2 / scalar code at run time; the tests above
    # already loop over every level the machine has (squeeze_set_isa), these runs cap it from the
    # environment as users would.
    for isa in avx2 generic; do
        phase "packed kernels with SQUEEZE_ISA=$isa (swift test --filter 'PackedKernelTests|BF16MatmulTests|PackedModelTests')" \
            env SQUEEZE_ISA=$isa swift test --skip-build --filter "PackedKernelTests|BF16MatmulTests|PackedModelTests" "${SCRATCH[@]}"
    done

    BIN=$(swift build --show-bin-path "${SCRATCH[@]}")
    shopt -s nullglob
    bundles=("$BIN"/*PackageTests.xctest)
    shopt -u nullglob
    if ((${#bundles[@]} != 1)); then
        for np in $NPS; do skip "multi-rank tests, np=$np" "expected one *PackageTests.xctest in $BIN, found ${#bundles[@]}"; done
    else
        XCTEST=${bundles[0]}
        listing=$("$XCTEST" --list-tests) || listing=""
        # XCTest on Linux takes a comma-separated list of Module.Class[/test] names (not a regex).
        MULTIRANK_FILTER=$(grep -oE '^[A-Za-z0-9_]+\.MultiRank[A-Za-z0-9_]*/' <<<"$listing" | tr -d / | sort -u | paste -sd, - || true)
        MULTIRANK_COUNT=$(grep -cE '^[A-Za-z0-9_]+\.MultiRank[A-Za-z0-9_]*/' <<<"$listing" || true)
        for np in $NPS; do
            if [[ -z $MULTIRANK_FILTER ]]; then
                skip "multi-rank tests, np=$np" "no MultiRank* test classes in $XCTEST"
            else
                phase "multi-rank tests, np=$np ($MULTIRANK_COUNT tests)" multi_rank "$np"
            fi
        done
    fi

    export SQUEEZE_ROOT=$ROOT SQUEEZE_BIN_PATH=$BIN
    shopt -s nullglob
    hooks=(scripts/tests/*.sh)
    shopt -u nullglob
    for hook in "${hooks[@]}"; do
        phase "CLI test $hook" bash "$hook"
    done
    if ((${#hooks[@]} == 0)); then echo; echo "(no scripts/tests/*.sh)"; fi
else
    skip "tests" "the build failed"
fi
summary
