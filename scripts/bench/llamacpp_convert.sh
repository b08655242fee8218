#!/usr/bin/env bash
# llama.cpp's own converter on a Squeeze/HF GPT-2 directory (used by gguf_llamacpp.sh and
# gguf_quality.sh): OUT/hf holds links to MODEL's files and a config.json with n_ctx = n_positions
# (the converter reads n_ctx, which a Squeeze/HF GPT-2 config does not write); writes
# OUT/llama-f32.gguf, the converter's log in OUT/convert.log. Needs PYTHON (torch, transformers,
# numpy) and LLAMA_SRC (the llama.cpp source, with convert_hf_to_gguf.py).
#
#   PYTHON=... LLAMA_SRC=... scripts/bench/llamacpp_convert.sh MODEL_DIR OUT_DIR
set -euo pipefail
MODEL=$1 OUT=$2
: "${PYTHON:?set PYTHON}" "${LLAMA_SRC:?set LLAMA_SRC}"
rm -rf "$OUT/hf"
mkdir -p "$OUT/hf"
for f in "$MODEL"/*; do [[ $(basename "$f") == config.json ]] || ln -sf "$(realpath "$f")" "$OUT/hf/"; done
"$PYTHON" -c 'import json, sys; c = json.load(open(sys.argv[1])); c["n_ctx"] = c["n_positions"]; json.dump(c, open(sys.argv[2], "w"), indent=1)' \
    "$MODEL/config.json" "$OUT/hf/config.json"
"$PYTHON" "$LLAMA_SRC/convert_hf_to_gguf.py" "$OUT/hf" --outtype f32 --outfile "$OUT/llama-f32.gguf" > "$OUT/convert.log" 2>&1
