#!/usr/bin/env bash
# Squeeze's GGUF export against llama.cpp itself, on a model directory (default models/default):
#   1. squeeze export --format gguf --type f32|q8_0|q4_0;
#   2. llama.cpp's converter (convert_hf_to_gguf.py --outtype f32) + llama-quantize Q8_0 / Q4_0 of
#      the same model, and every tensor of the two files compared byte for byte (gguf-py);
#   3. llama-perplexity -c 256 -t 2 of Squeeze's files, against `squeeze eval --context 256
#      --scoring llama` (llama-perplexity's scoring) of the same files and of the source directory
#      (and the default sliding-window scoring, for reference).
# Run by hand, never in CI (about 20 minutes on 2 idle cores). Needs the tools of
# scripts/bench/llamacpp.sh (or BIN=dir with llama-perplexity and llama-quantize, LLAMA_SRC=dir
# with convert_hf_to_gguf.py) and a Python with torch, transformers, numpy and gguf (PYTHON).
#
#   PYTHON=/work/venv/bin/python scripts/bench/gguf_llamacpp.sh [MODEL_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
MODEL=${1:-models/default}
OUT=${2:-runs/gguf-llamacpp}
PYTHON=${PYTHON:-python3}
TEXT=${TEXT:-data/corpus/test.txt}
SQUEEZE=${SQUEEZE:-.build/release/squeeze}
BIN=${BIN:-$(scripts/bench/llamacpp.sh --print-dir)}
LLAMA_SRC=${LLAMA_SRC:-$(dirname "$BIN")/../src-${SQUEEZE_LLAMACPP_VERSION:-0.3.36}/llama.cpp}
[[ -x $SQUEEZE ]] || swift build -c release
[[ -f $TEXT ]] || python3 scripts/fetch_data.py
mkdir -p "$OUT/hf"
name=$(basename "$MODEL")

echo "==> squeeze export ($MODEL)"
for t in f32 q8_0 q4_0; do "$SQUEEZE" export --model "$MODEL" --format gguf --type "$t" --out "$OUT/$name-$t.gguf" | head -1; done

echo "==> llama.cpp's converter and llama-quantize"
PYTHON=$PYTHON LLAMA_SRC=$LLAMA_SRC scripts/bench/llamacpp_convert.sh "$MODEL" "$OUT"
for t in Q8_0 Q4_0; do "$BIN/llama-quantize" "$OUT/llama-f32.gguf" "$OUT/llama-${t,,}.gguf" "$t" > "$OUT/quantize-${t,,}.log" 2>&1; done
"$PYTHON" - "$OUT" "$name" <<'EOF'
import sys, numpy as np, gguf
out, name = sys.argv[1:]
for t in ["f32", "q8_0", "q4_0"]:
    a = {x.name: x for x in gguf.GGUFReader(f"{out}/{name}-{t}.gguf").tensors}
    b = {x.name: x for x in gguf.GGUFReader(f"{out}/llama-{t}.gguf").tensors}
    assert set(a) == set(b), set(a) ^ set(b)
    differ = [f"{n} (Squeeze {a[n].tensor_type.name}, llama.cpp {b[n].tensor_type.name})" for n in a
              if a[n].tensor_type != b[n].tensor_type or np.array(a[n].data).tobytes() != np.array(b[n].data).tobytes()]
    print(f"{t}: {len(a) - len(differ)} of {len(a)} tensors byte-identical to llama.cpp's" + (f"; differ: {', '.join(differ)}" if differ else ""))
EOF

echo "==> perplexity (context 256)"
ppl() { grep -o 'Final estimate: PPL = [0-9.]*' "$1" | awk '{print $5}'; }
eval_ppl() { "$SQUEEZE" eval --model "$1" --data "$TEXT" --context 256 --scoring "$2" --json | "$PYTHON" -c 'import json,sys; print("%.4f" % json.loads(sys.stdin.read().strip().splitlines()[-1])["perplexity"])'; }
src_llama=$(eval_ppl "$MODEL" llama); src_sliding=$(eval_ppl "$MODEL" sliding)
printf '| file | llama-perplexity | squeeze eval --scoring llama, same file | / llama.cpp | source directory, --scoring llama | / llama.cpp | squeeze eval (sliding window), same file |\n|---|---:|---:|---:|---:|---:|---:|\n'
for t in f32 q8_0 q4_0; do
    f=$OUT/$name-$t.gguf
    "$BIN/llama-perplexity" -m "$f" -f "$TEXT" -c 256 -t 2 > "$OUT/ppl-$t.log" 2>&1
    l=$(ppl "$OUT/ppl-$t.log"); s=$(eval_ppl "$f" llama); w=$(eval_ppl "$f" sliding)
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$l" "$s" "$(awk "BEGIN{printf \"%.6f\", $s/$l}")" \
        "$src_llama" "$(awk "BEGIN{printf \"%.6f\", $src_llama/$l}")" "$w"
done
"$BIN/llama-perplexity" -m "$OUT/llama-q4_0.gguf" -f "$TEXT" -c 256 -t 2 > "$OUT/ppl-llama-q4_0.log" 2>&1
echo "(source directory, sliding window: $src_sliding; llama-quantize's own Q4_0 file, token_embd Q6_K,"\
     "$(stat -c %s "$OUT/llama-q4_0.gguf") bytes against Squeeze's $(stat -c %s "$OUT/$name-q4_0.gguf"): llama-perplexity $(ppl "$OUT/ppl-llama-q4_0.log"))"
