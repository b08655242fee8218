#!/usr/bin/env bash
# libFuzzer harnesses for Squeeze's file parsers (ASan + libFuzzer, one target at a time).
#
#   scripts/fuzz.sh [SECONDS]          build, then fuzz every target for SECONDS each (default 600)
#   SQUEEZE_FUZZ_TARGETS="config"      only these targets (safetensors config tokenizer recipe gguf)
#   scripts/fuzz.sh --build            only build; prints the fuzzer's path
#   scripts/fuzz.sh --merge TARGET DIR minimize the target's corpus into DIR (libFuzzer -merge=1)
#   scripts/fuzz.sh --pick TARGET [N]  add up to N (default 30) small, coverage-rich inputs of the
#                                      corpus to Tests/Fixtures/fuzz/TARGET/ as min-* (pick.py)
#
# Targets (the one-input code is FuzzTarget.run in Sources/FuzzTargets/FuzzTargets.swift):
#   safetensors  SafeTensorsFile(data:url:) + bytes/floats/tensor/integers of every entry
#   config       GPT2Config(data:url:) + GPT2.load(directory:config:weights:) + a 2-token forward;
#                input = config.json, "\0--8<--\0", model.safetensors (weights part optional)
#   tokenizer    GPT2Tokenizer(vocabData:mergesData:...) + encode/decode round trips;
#                input = vocab.json, separator, merges.txt [, separator, text]
#   recipe       Recipe.parse(_:)
#   gguf         GGUFFile(data:url:) + bytes(of:)/floats(of:) of every tensor, then a GGUFWriter
#                round trip in memory (what the reader accepts, the writer writes back the same),
#                then GPT2.load(gguf:) (a loaded model runs two tokens, its tokenizer round-trips
#                text); every rejection must name the input file
#
# How it is built (and why this way): the harness code is an ordinary library target,
# FuzzTargets, that `swift build` compiles like any other and FuzzRegressionTests links, so the
# normal build never produces (or fails to link) a fuzzer. Here SwiftPM compiles that target and
# its dependencies into our own scratch path with coverage + ASan instrumentation
# (-sanitize=fuzzer,address as one flag: a second -sanitize= would replace the first) and
# -D SQUEEZE_FUZZER, which compiles in Sources/FuzzTargets/LibFuzzerEntry.swift
# (LLVMFuzzerInitialize/LLVMFuzzerTestOneInput; the target comes from SQUEEZE_FUZZ_TARGET).
# SwiftPM does not link library targets, so the script links the instrumented objects itself with
# `swiftc -sanitize=fuzzer,address`, which adds libFuzzer's main. (Linking a SwiftPM executable
# target with -sanitize=fuzzer clashes with the `main` SwiftPM gives every executable; gold even
# crashes on it.) Every object in the scratch path belongs to FuzzTargets' dependency closure,
# because nothing else is ever built there; system libraries come from the modules' `link`
# directives (autolink) plus pkg-config's -L paths.
#
# Inputs: seeds from the fixtures (scripts/fuzz/seeds.py: the tiny models with their vocabulary
# cut to 16 tokens, small tokenizers, the recipes, the GGUF fixtures), a dictionary per target
# (scripts/fuzz/<target>.dict: JSON keys, dtypes, YAML syntax, extreme numbers) and the committed
# corpus Tests/Fixtures/fuzz/<target>/ (read-only); new units go to $SCRATCH/fuzz/corpus/<target>/,
# crashes/timeouts/OOMs to $SCRATCH/fuzz/artifacts/<target>/ (crash-*, timeout-*, oom-*), logs to
# $SCRATCH/fuzz/logs/. Limits: -timeout=10 s per input, -rss_limit_mb=4096, -max_len per target.
# Keep every finding under Tests/Fixtures/fuzz/<target>/ once fixed (FuzzRegressionTests replays
# them). Reproduce one: SQUEEZE_FUZZ_TARGET=<target> SQUEEZE_FUZZ_VERBOSE=1 $SCRATCH/squeeze-fuzz <file>
# (VERBOSE prints the error each input was rejected with).
#
# Environment: SQUEEZE_FUZZ_SCRATCH (default .build-fuzz, git-ignored), SQUEEZE_FUZZ_ARGS (extra
# libFuzzer flags). Exit status 1 when any target reported a finding.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# The package list and installer shared by every script (and Open MPI settings, unused here).
source scripts/lib.sh
SCRATCH=${SQUEEZE_FUZZ_SCRATCH:-$ROOT/.build-fuzz}
WORK=$SCRATCH/fuzz
FUZZER=$SCRATCH/squeeze-fuzz
TARGETS=(${SQUEEZE_FUZZ_TARGETS:-safetensors config tokenizer recipe gguf})
# Deterministic Dictionary order: a finding must reproduce.
export SWIFT_DETERMINISTIC_HASHING=1
# Crashes go to libFuzzer's handler (artifact + stack), not to the interactive swift-backtrace.
export SWIFT_BACKTRACE=enable=no

# Longest input per target: model directories are config + a 17-33 KB shrunk safetensors file;
# safetensors seeds are mostly headers (the one whole file is 17 KB); tokenizer seeds are ~8 KB;
# the GGUF fixtures are 1-3 KB.
max_len() {
    case $1 in
        safetensors) echo 32768 ;;
        config) echo 65536 ;;
        tokenizer) echo 32768 ;;
        recipe) echo 4096 ;;
        gguf) echo 16384 ;;
        *) echo "unknown target '$1' (safetensors config tokenizer recipe gguf)" >&2; exit 2 ;;
    esac
}

build() {
    ensure_packages || exit 1
    echo "==> instrumented build of FuzzTargets in $SCRATCH"
    swift build --scratch-path "$SCRATCH" --target FuzzTargets \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -DSQUEEZE_FUZZER 2>&1 |
        { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
    local status=${PIPESTATUS[0]}
    ((status == 0)) || { echo "error: swift build failed (exit status $status)" >&2; exit 1; }
    local bin
    bin=$(swift build --scratch-path "$SCRATCH" --show-bin-path)
    local objects=()
    mapfile -t objects < <(find "$bin" -path '*.build/*.o' | sort)
    ((${#objects[@]} > 0)) || { echo "error: no objects under $bin" >&2; exit 1; }
    echo "==> linking $FUZZER (${#objects[@]} objects)"
    # shellcheck disable=SC2046  # pkg-config prints several words
    swiftc -sanitize=fuzzer,address -g -o "$FUZZER" "${objects[@]}" $(pkg-config --libs-only-L ompi openblas) \
        2> >(grep -v 'warning: Cannot export local symbol' >&2)
}

seeds() {
    rm -rf "$WORK/seeds"
    python3 scripts/fuzz/seeds.py "$WORK/seeds"
}

if [[ ${1:-} == --build ]]; then build; echo "$FUZZER"; exit 0; fi
if [[ ${1:-} == --merge ]]; then
    t=${2:?--merge TARGET DIR}; out=${3:?--merge TARGET DIR}
    [[ -x $FUZZER ]] || build
    seeds
    mkdir -p "$out"
    SQUEEZE_FUZZ_TARGET=$t "$FUZZER" -merge=1 -timeout=10 -rss_limit_mb=4096 -max_len="$(max_len "$t")" \
        "$out" "$WORK/corpus/$t" "Tests/Fixtures/fuzz/$t" "$WORK/seeds/$t"
    exit 0
fi

if [[ ${1:-} == --pick ]]; then
    t=${2:?--pick TARGET [N]}
    [[ -x $FUZZER ]] || build
    seeds
    empty=$(mktemp -d) ctl=$(mktemp)
    SQUEEZE_FUZZ_TARGET=$t "$FUZZER" -merge=1 -merge_control_file="$ctl" -timeout=10 -rss_limit_mb=4096 \
        -max_len="$(max_len "$t")" "$empty" "Tests/Fixtures/fuzz/$t" "$WORK/corpus/$t" "$WORK/seeds/$t" >/dev/null 2>&1
    python3 scripts/fuzz/pick.py "$ctl" "Tests/Fixtures/fuzz/$t" "${3:-30}"
    rm -rf "$empty" "$ctl"
    exit 0
fi

DURATION=${1:-600}
[[ $DURATION =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS] | --build | --merge TARGET DIR | --pick TARGET [N]" >&2; exit 2; }
for t in "${TARGETS[@]}"; do max_len "$t" >/dev/null; done
build
seeds
mkdir -p "$WORK/logs"

FOUND=()
for t in "${TARGETS[@]}"; do
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    dict=()
    [[ -f scripts/fuzz/$t.dict ]] && dict=(-dict="scripts/fuzz/$t.dict")
    log=$WORK/logs/$t-$(date +%Y%m%d-%H%M%S).log
    echo
    echo "==> fuzzing $t for $DURATION s (log: $log)"
    status=0
    # shellcheck disable=SC2086  # SQUEEZE_FUZZ_ARGS is a list of flags
    SQUEEZE_FUZZ_TARGET=$t "$FUZZER" -max_total_time="$DURATION" -timeout=10 -rss_limit_mb=4096 \
        -max_len="$(max_len "$t")" "${dict[@]}" -print_final_stats=1 -artifact_prefix="$WORK/artifacts/$t/" \
        ${SQUEEZE_FUZZ_ARGS:-} "$WORK/corpus/$t" "Tests/Fixtures/fuzz/$t" "$WORK/seeds/$t" >"$log" 2>&1 || status=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::|Done [0-9]+ runs)' "$log" || true
    if ((status != 0)); then
        FOUND+=("$t")
        echo "FINDING in $t (libFuzzer exit status $status):"
        grep -E 'ERROR: (libFuzzer|AddressSanitizer)|Fatal error|fuzz invariant|Test unit written to|^SUMMARY' "$log" | head -8 || true
    fi
done

echo
echo "==> summary"
for t in "${TARGETS[@]}"; do
    if [[ " ${FOUND[*]} " == *" $t "* ]]; then echo "  FINDING  $t"; else echo "  clean    $t (${DURATION} s)"; fi
done
echo "artifacts: $WORK/artifacts/<target>/   corpus: $WORK/corpus/<target>/"
((${#FOUND[@]} == 0))
