#!/usr/bin/env bash
# llama.cpp's own tools, built once, for benchmarks that compare Squeeze with llama.cpp (GGUF
# perplexity, quantisation, speed); run by hand, never in CI. The source is the llama.cpp that the
# llama-cpp-python sdist on PyPI vendors (vendor/llama.cpp; 0.3.36 = llama.cpp b11312, commit
# 0c1e57098), fetched with pip and checked against its sha256. It builds (Release, static,
# -march=native, no OpenSSL, no server/web UI, no tests) llama-perplexity, llama-quantize,
# llama-bench, llama-imatrix, llama-completion (the classic CLI; llama-cli needs the server build),
# llama-simple and llama-gguf, then prints their directory. A second run finds the stamp of the same
# version and flags and only prints. Nothing is written inside the repository:
#   $SQUEEZE_LLAMACPP_CACHE (default ~/.cache/squeeze/llama.cpp)/
#     llama_cpp_python-VERSION.tar.gz, src-VERSION/ (unpacked; src-VERSION/llama.cpp is llama.cpp,
#     with convert_hf_to_gguf.py and gguf-py), build-VERSION/bin/ (the tools), build-VERSION/build.log
# Installs cmake, g++, make and python3-pip when missing (apt, as root). The build takes 7 minutes
# on 2 idle cores (12 while other builds run).
#
#   scripts/bench/llamacpp.sh                 build if needed; print version, tools and paths
#   BIN=$(scripts/bench/llamacpp.sh --print-dir)   the same, but stdout is only the bin directory
#   SQUEEZE_LLAMACPP_VERSION=0.3.37 SQUEEZE_LLAMACPP_SHA256=... scripts/bench/llamacpp.sh   another sdist
#
# Converting a Squeeze/HF GPT-2 directory: llama.cpp's converter reads config.json's n_ctx, which
# Squeeze's config.json does not write; give it a copy whose config.json has "n_ctx" = n_positions:
#   PYTHON=/work/venv/bin/python  (torch, transformers, numpy; the converter uses its own gguf-py)
#   $PYTHON SRC/llama.cpp/convert_hf_to_gguf.py DIR --outtype f32 --outfile M.gguf
#   BIN/llama-quantize M.gguf M-q8_0.gguf Q8_0
#   BIN/llama-perplexity -m M.gguf -f data/corpus/test.txt -c 256 -t 2
#   BIN/llama-bench -m M.gguf -t 2 -p 256 -n 128
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
PRINT_DIR=0
while (($#)); do
    case $1 in
        --print-dir) PRINT_DIR=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "llamacpp.sh: unknown argument $1 (usage: scripts/bench/llamacpp.sh [--print-dir])" >&2; exit 2 ;;
    esac
    shift
done
# Everything but the answer goes to stderr, so that --print-dir's stdout is the directory alone.
exec 3>&1 1>&2

# The pinned sdist; another version needs its sha256 (pip download prints it; PyPI lists it).
DEFAULT_VERSION=0.3.36
DEFAULT_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
VERSION=${SQUEEZE_LLAMACPP_VERSION:-$DEFAULT_VERSION}
if [[ $VERSION == "$DEFAULT_VERSION" ]]; then
    SHA256=${SQUEEZE_LLAMACPP_SHA256:-$DEFAULT_SHA256}
else
    SHA256=${SQUEEZE_LLAMACPP_SHA256:?llamacpp.sh: SQUEEZE_LLAMACPP_VERSION=$VERSION needs SQUEEZE_LLAMACPP_SHA256, the sha256 of its sdist}
fi
# llama.cpp's build number (its release tag bNNNN) for the pinned sdist: the sdist's git metadata is
# a shallow clone, so cmake would count 1. Unknown (0) for another version.
BUILD_NUMBER=0
[[ $VERSION == 0.3.36 ]] && BUILD_NUMBER=11312
CACHE=${SQUEEZE_LLAMACPP_CACHE:-$HOME/.cache/squeeze/llama.cpp}
SRC=$CACHE/src-$VERSION
BUILD=$CACHE/build-$VERSION
TOOLS=(llama-perplexity llama-quantize llama-bench llama-imatrix llama-completion llama-simple llama-gguf)
CMAKE_FLAGS=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF
             -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
             -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_NUMBER=$BUILD_NUMBER)
STAMP_TEXT="llama-cpp-python $VERSION sha256 $SHA256 build $BUILD_NUMBER flags ${CMAKE_FLAGS[*]} tools ${TOOLS[*]} cpu $(grep -m1 '^model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- || true)"

built() {
    [[ -f $BUILD/squeeze-stamp && $(cat "$BUILD/squeeze-stamp") == "$STAMP_TEXT" ]] || return 1
    local t
    for t in "${TOOLS[@]}"; do [[ -x $BUILD/bin/$t ]] || return 1; done
}

mkdir -p "$CACHE"
exec 9> "$CACHE/lock"
flock 9   # one build at a time; a second caller waits and then finds the stamp
if ! built; then
    SQUEEZE_PACKAGES=(cmake g++ make python3-pip)
    ensure_packages
    SDIST=$CACHE/llama_cpp_python-$VERSION.tar.gz
    if [[ ! -f $SDIST ]] || ! echo "$SHA256  $SDIST" | sha256sum -c --status; then
        echo "==> pip download llama-cpp-python==$VERSION (sdist) into $CACHE"
        rm -f "$SDIST"
        REQ=$(mktemp "${TMPDIR:-/tmp}/llamacpp-req.XXXXXX")
        trap 'rm -f "$REQ"' EXIT
        echo "llama-cpp-python==$VERSION --hash=sha256:$SHA256" > "$REQ"
        # --no-binary for this package only: ':all:' would also build its build backend's
        # dependencies (cmake among them) from source. pip checks the hash itself.
        python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python --require-hashes \
            -r "$REQ" -d "$CACHE"
        echo "$SHA256  $SDIST" | sha256sum -c --status || { echo "error: $SDIST does not have sha256 $SHA256" >&2; exit 1; }
    fi
    if [[ ! -f $SRC/llama.cpp/CMakeLists.txt ]]; then
        echo "==> unpacking $SDIST"
        rm -rf "$SRC" "$SRC.tmp"
        mkdir -p "$SRC.tmp"
        tar -xzf "$SDIST" -C "$SRC.tmp"
        # A link, not a move: vendor/llama.cpp/.git points at ../../.git/modules/vendor/llama.cpp.
        ln -s "llama_cpp_python-$VERSION/vendor/llama.cpp" "$SRC.tmp/llama.cpp"
        mv "$SRC.tmp" "$SRC"
    fi
    COMMIT=$(git -C "$SRC/llama.cpp" rev-parse --short HEAD 2>/dev/null || true)
    [[ -n $COMMIT ]] || COMMIT=$(grep -m1 -o 'llama.cpp@[0-9a-f]*' "$SRC/llama_cpp_python-$VERSION/CHANGELOG.md" 2>/dev/null | cut -d@ -f2 || true)
    echo "==> cmake: llama.cpp b$BUILD_NUMBER (${COMMIT:-unknown commit}) in $BUILD"
    rm -f "$BUILD/squeeze-stamp"
    cmake -S "$SRC/llama.cpp" -B "$BUILD" "${CMAKE_FLAGS[@]}" -DLLAMA_BUILD_COMMIT="${COMMIT:-unknown}" > "$BUILD.configure.log" 2>&1 \
        || { tail -20 "$BUILD.configure.log" >&2; echo "error: cmake configure failed; see $BUILD.configure.log" >&2; exit 1; }
    echo "==> cmake --build (${TOOLS[*]}) -j$(nproc): 7-12 minutes on 2 cores; log $BUILD/build.log"
    if ! cmake --build "$BUILD" --config Release -j"$(nproc)" --target "${TOOLS[@]}" > "$BUILD/build.log" 2>&1; then
        grep -E 'error|Error' "$BUILD/build.log" | head -20 >&2
        echo "error: the llama.cpp build failed; see $BUILD/build.log" >&2
        exit 1
    fi
    echo "$STAMP_TEXT" > "$BUILD/squeeze-stamp"
    built || { echo "error: the build finished but a tool is missing from $BUILD/bin" >&2; exit 1; }
fi

if ((PRINT_DIR)); then
    echo "$BUILD/bin" >&3
else
    echo "llama.cpp $("$BUILD/bin/llama-perplexity" --version 2>&1 | grep -m1 '^version' || true)"
    echo "tools:     ${TOOLS[*]}"
    echo "converter: $SRC/llama.cpp/convert_hf_to_gguf.py (gguf-py: $SRC/llama.cpp/gguf-py)"
    echo "$BUILD/bin" >&3
fi
