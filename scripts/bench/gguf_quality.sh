#!/usr/bin/env bash
# Quality at the same bytes, in llama.cpp's own perplexity: Squeeze's Q4_0 model against
# llama.cpp's best 4-bit quantisations of the same teacher.
#   1. the teacher (MODEL, default models/default) converted by llama.cpp's converter to F32 (a copy
#      of the directory whose config.json has n_ctx = n_positions, as gguf_llamacpp.sh does);
#   2. an importance matrix of the teacher: `llama-imatrix -c 256 -t 2 --chunks 200` on the
#      training text (200 windows of 256 = 51,200 tokens, from its start; IMATRIX_CHUNKS overrides);
#   3. llama-quantize of the F32 file to Q4_0 without and with the importance matrix, and to Q4_K_M
#      with it (llama-quantize's defaults otherwise: token_embd Q6_K in all three), and to Q4_0 with
#      token_embd Q4_0 too (--token-embedding-type q4_0, without and with the matrix): llama.cpp's
#      Q4_0 at exactly the bytes of Squeeze's file;
#   4. Squeeze's file: `squeeze export --model SQUEEZE_Q4_DIR --format gguf --type q4_0` (a Squeeze
#      model whose layers are already Q4_0: their blocks are written unchanged);
#   5. every file, and the F32 teacher, through `llama-perplexity -c 256 -t 2` on the test text.
# Goals printed: Squeeze <= 0.97x llama.cpp's Q4_0 (the best of its four Q4_0 files) and <= 1.0x
# its Q4_K_M, in no more bytes. Writes runs/gguf-quality/results.md (the table) and results.json.
# Run by hand, never in CI: about 20 minutes on 2 idle cores for the bundled model (40 on a busy
# machine). Needs the tools of scripts/bench/llamacpp.sh (or BIN=dir with llama-perplexity,
# llama-quantize, llama-imatrix; LLAMA_SRC=dir with convert_hf_to_gguf.py) and a Python with torch,
# transformers, numpy (PYTHON).
#
#   PYTHON=/work/venv/bin/python scripts/bench/gguf_quality.sh [SQUEEZE_Q4_DIR]
#   REUSE=1 ... keeps llama.cpp's side from an earlier run in OUT (the converted teacher, the
#       importance matrix, the quantized files and their perplexities: they do not depend on the
#       Squeeze model), so only Squeeze's file is exported and evaluated again
#       (default runs/quality-full/q4-gptq-kd: the model of recipes/q4-gptq-kd.yaml, Q4_0 by GPTQ +
#       quantization-aware distillation; any Squeeze model directory whose layers are Q4_0)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
SQ=${1:-runs/quality-full/q4-gptq-kd}
MODEL=${MODEL:-models/default}
OUT=${OUT:-runs/gguf-quality}
PYTHON=${PYTHON:-python3}
TEXT=${TEXT:-data/corpus/test.txt}
TRAIN=${TRAIN:-data/corpus/train.txt}
CHUNKS=${IMATRIX_CHUNKS:-200}
SQUEEZE=${SQUEEZE:-.build/release/squeeze}
BIN=${BIN:-$(scripts/bench/llamacpp.sh --print-dir)}
LLAMA_SRC=${LLAMA_SRC:-$(dirname "$BIN")/../src-${SQUEEZE_LLAMACPP_VERSION:-0.3.36}/llama.cpp}
[[ -x $SQUEEZE ]] || swift build -c release
[[ -f $TEXT && -f $TRAIN ]] || python3 scripts/fetch_data.py
[[ -d $SQ ]] || { echo "gguf_quality.sh: $SQ is not a model directory (pass a Squeeze Q4_0 model directory)" >&2; exit 2; }
mkdir -p "$OUT"

# llama.cpp's side (kept with REUSE=1 when a previous run left its perplexities).
FILES=(llama-f32 llama-q4_0 llama-q4_0-imatrix llama-q4_0-te llama-q4_0-te-imatrix llama-q4_k_m-imatrix squeeze-q4_0)
reused=1
for m in "${FILES[@]:0:6}"; do grep -q 'Final estimate' "$OUT/ppl-$m.log" 2>/dev/null || reused=0; done
[[ ${REUSE:-} == 1 ]] || reused=0
if ((reused)); then
    echo "==> llama.cpp's converted, quantized and evaluated files: kept from the previous run in $OUT (REUSE=1)"
else
echo "==> llama.cpp's converter ($MODEL, F32)"
PYTHON=$PYTHON LLAMA_SRC=$LLAMA_SRC scripts/bench/llamacpp_convert.sh "$MODEL" "$OUT"

echo "==> llama-imatrix ($CHUNKS chunks of 256 tokens of $TRAIN)"
nice -n 5 "$BIN/llama-imatrix" -m "$OUT/llama-f32.gguf" -f "$TRAIN" -c 256 -t 2 --chunks "$CHUNKS" \
    -o "$OUT/imatrix.gguf" > "$OUT/imatrix.log" 2>&1

echo "==> llama-quantize Q4_0, Q4_0 + imatrix, Q4_K_M + imatrix; Q4_0 with token_embd Q4_0, without and with the imatrix"
nice -n 5 "$BIN/llama-quantize" "$OUT/llama-f32.gguf" "$OUT/llama-q4_0.gguf" Q4_0 > "$OUT/quantize-q4_0.log" 2>&1
nice -n 5 "$BIN/llama-quantize" --imatrix "$OUT/imatrix.gguf" "$OUT/llama-f32.gguf" "$OUT/llama-q4_0-imatrix.gguf" Q4_0 \
    > "$OUT/quantize-q4_0-imatrix.log" 2>&1
nice -n 5 "$BIN/llama-quantize" --imatrix "$OUT/imatrix.gguf" "$OUT/llama-f32.gguf" "$OUT/llama-q4_k_m-imatrix.gguf" Q4_K_M \
    > "$OUT/quantize-q4_k_m-imatrix.log" 2>&1
nice -n 5 "$BIN/llama-quantize" --token-embedding-type q4_0 "$OUT/llama-f32.gguf" "$OUT/llama-q4_0-te.gguf" Q4_0 \
    > "$OUT/quantize-q4_0-te.log" 2>&1
nice -n 5 "$BIN/llama-quantize" --token-embedding-type q4_0 --imatrix "$OUT/imatrix.gguf" "$OUT/llama-f32.gguf" \
    "$OUT/llama-q4_0-te-imatrix.gguf" Q4_0 > "$OUT/quantize-q4_0-te-imatrix.log" 2>&1


echo "==> llama-perplexity -c 256 -t 2 ($TEXT): llama.cpp's files"
for m in "${FILES[@]:0:6}"; do
    nice -n 5 "$BIN/llama-perplexity" -m "$OUT/$m.gguf" -f "$TEXT" -c 256 -t 2 > "$OUT/ppl-$m.log" 2>&1
    echo "$m: $(grep -o 'Final estimate: PPL = .*' "$OUT/ppl-$m.log")"
done
fi

echo "==> squeeze export ($SQ, Q4_0)"
"$SQUEEZE" export --model "$SQ" --format gguf --type q4_0 --out "$OUT/squeeze-q4_0.gguf" > "$OUT/export.log"
head -1 "$OUT/export.log"
echo "==> llama-perplexity -c 256 -t 2 ($TEXT): Squeeze's file"
nice -n 5 "$BIN/llama-perplexity" -m "$OUT/squeeze-q4_0.gguf" -f "$TEXT" -c 256 -t 2 > "$OUT/ppl-squeeze-q4_0.log" 2>&1
echo "squeeze-q4_0: $(grep -o 'Final estimate: PPL = .*' "$OUT/ppl-squeeze-q4_0.log")"

"$PYTHON" - "$OUT" "$SQ" "$MODEL" "$CHUNKS" "$SQUEEZE" "${FILES[@]}" <<'EOF'
import json, os, re, subprocess, sys
out, sq, model, chunks, squeeze, *files = sys.argv[1:]
names = {"llama-f32": f"teacher F32 (llama.cpp's converter; {model})",
         "llama-q4_0": "llama.cpp Q4_0 (token_embd Q6_K)",
         "llama-q4_0-imatrix": "llama.cpp Q4_0 + imatrix (token_embd Q6_K)",
         "llama-q4_0-te": "llama.cpp Q4_0, token_embd Q4_0",
         "llama-q4_0-te-imatrix": "llama.cpp Q4_0 + imatrix, token_embd Q4_0",
         "llama-q4_k_m-imatrix": "llama.cpp Q4_K_M + imatrix",
         "squeeze-q4_0": f"Squeeze Q4_0 ({sq})"}
res = {}
for m in files:
    log = open(f"{out}/ppl-{m}.log").read()
    ppl, err = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log).groups()
    res[m] = {"name": names[m], "file": f"{out}/{m}.gguf", "bytes": os.path.getsize(f"{out}/{m}.gguf"),
              "perplexity": float(ppl), "stderr": float(err)}
# The Q4_0 reference is the best of llama.cpp's Q4_0 files (the importance matrix need not help).
q40 = min((res[m] for m in files if m.startswith("llama-q4_0")), key=lambda r: r["perplexity"])
qkm, sqz = res["llama-q4_k_m-imatrix"], res["squeeze-q4_0"]
# ... and the best of those within 0.1% of Squeeze's bytes (token_embd Q4_0: the same tensors and types).
same = min((res[m] for m in files if m.startswith("llama-q4_0") and res[m]["bytes"] <= 1.001 * sqz["bytes"]),
           key=lambda r: r["perplexity"], default=None)
short = lambda r: r["name"].removeprefix("llama.cpp ")
lines = [f"| model | bytes of the file | llama-perplexity | ratio to llama.cpp Q4_0 (its best: {short(q40)}) | ratio to llama.cpp Q4_K_M + imatrix | "
         f"ratio to llama.cpp Q4_0 at Squeeze's bytes ({short(same) if same else 'none'}) |",
         "|---|---:|---:|---:|---:|---:|"]
for m in files:
    r = res[m]
    r["ratio_q4_0"], r["ratio_q4_k_m"] = r["perplexity"] / q40["perplexity"], r["perplexity"] / qkm["perplexity"]
    r["ratio_q4_0_same_bytes"] = r["perplexity"] / same["perplexity"] if same else None
    lines.append(f"| {r['name']} | {r['bytes']:,} | {r['perplexity']:.4f} ± {r['stderr']:.4f} | {r['ratio_q4_0']:.4f} | {r['ratio_q4_k_m']:.4f} | "
                 + (f"{r['ratio_q4_0_same_bytes']:.4f} |" if same else " |"))
goals = [(f"<= 0.97x llama.cpp Q4_0 ({short(q40)})", sqz["ratio_q4_0"] <= 0.97, sqz["ratio_q4_0"], sqz["bytes"] <= q40["bytes"], q40["bytes"]),
         ("<= 1.0x llama.cpp Q4_K_M + imatrix", sqz["ratio_q4_k_m"] <= 1.0, sqz["ratio_q4_k_m"], sqz["bytes"] <= qkm["bytes"], qkm["bytes"])]
# The binary's own tree (it may be another checkout than these scripts').
commit = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(squeeze)), "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip() or "unknown"
notes = ["", f"llama-perplexity -c 256 -t 2 on the test text (the second half of each window of 256 scored); importance matrix: "
         f"llama-imatrix -c 256 --chunks {chunks} on the training text (it holds no entry for token_embd); export by {squeeze} (tree at {commit}). "
         "± is llama-perplexity's standard error.", ""]
for what, met, ratio, fewer, ref_bytes in goals:
    notes.append(f"- goal: Squeeze {what}: {ratio:.4f}, {'met' if met else 'missed'}; bytes {sqz['bytes']:,} against "
                 f"{ref_bytes:,}: {'no more' if fewer else 'more'}")
if same:
    notes.append(f"- at the same bytes: Squeeze / llama.cpp {short(same)} ({same['bytes']:,} bytes) = {sqz['ratio_q4_0_same_bytes']:.4f}")
open(f"{out}/results.md", "w").write("\n".join(lines + notes) + "\n")
json.dump({"squeeze_model": sq, "squeeze_binary": squeeze, "teacher": model, "imatrix_chunks": int(chunks), "squeeze_commit": commit, "results": res,
           "goals": [{"goal": g[0], "met": g[1], "ratio": g[2], "no_more_bytes": g[3]} for g in goals]},
          open(f"{out}/results.json", "w"), indent=1)
print("\n".join(lines + notes))
EOF
