#!/usr/bin/env bash
# Speed against llama.cpp on the same file contents. One gpt2-shaped model (124M, random init:
# speed does not depend on the values) exported by `squeeze export --format gguf --type T` for T in
# f32, f16, q8_0, q4_0; each file is run by both, 2 threads each, in ROUNDS alternating rounds
# (llama.cpp on every file, then Squeeze on every file):
#   - llama.cpp: `llama-bench -m F -t 2 -p 512 -n 128 -o json` (pp512 and tg128, each the mean of
#     llama-bench's 5 repetitions after its warm-up run), and `llama-bench -t 2 -p 0 -n 128 -d 512`
#     (tg128 after a 512-token context, the depth at which Squeeze decodes);
#   - Squeeze: `squeeze generate --model F --prompt P --max-tokens 128 --temperature 0 --json`,
#     OPENBLAS_NUM_THREADS=2, P the first 512 tokens of the test text: its prefill_tokens_per_second
#     (512 prompt tokens to the first new token) and decode_tokens_per_second (the 127 tokens after
#     it, at depths 513..640); and the same with the one-token prompt "The" (--max-tokens 128: the
#     127 tokens at depths 2..128, against llama-bench's depth 0); one cold process per measurement (loading not timed).
#     Squeeze maps the file and runs its weights where they lie (F16 kept as F16).
#   - peak RSS of each process (/usr/bin/time -f %M; llama-bench's is that of its pp512/tg128 run).
# Best round per side (highest tokens/s, lowest RSS); the 1-minute load average before each
# measurement is kept (llama.cpp's threads wait at barriers and slow down far more than Squeeze's
# when the 2 cores are shared). Writes runs/vs-llamacpp/results.md (the table) and results.json
# (every round), and prints the table. Run by hand on a quiet machine, never in CI: a round takes
# about 20 minutes on a busy 2-core machine (llama-bench's warm-up + 5 repetitions of each test;
# F32 decodes at a few tokens/s there). Needs the tools of scripts/bench/llamacpp.sh (or
# BIN=dir with llama-bench) and a Python with transformers (PYTHON; the 512-token prompt).
#
#   PYTHON=/work/venv/bin/python scripts/bench/vs_llamacpp.sh [ROUNDS]     (default 3)
#   TYPES="q4_0" ...     only some of f32 f16 q8_0 q4_0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROUNDS=${1:-3}
OUT=${OUT:-runs/vs-llamacpp}
PYTHON=${PYTHON:-python3}
TEXT=${TEXT:-data/corpus/test.txt}
SQUEEZE=${SQUEEZE:-.build/release/squeeze}
BIN=${BIN:-$(scripts/bench/llamacpp.sh --print-dir)}
[[ -x $SQUEEZE ]] || swift build -c release
[[ -f $TEXT ]] || python3 scripts/fetch_data.py
read -r -a TYPES <<< "${TYPES:-f32 f16 q8_0 q4_0}"
# Squeeze's runs: file type | --precision
RUNS=()
for t in "${TYPES[@]}"; do RUNS+=("$t|f32"); done
mkdir -p "$OUT/raw"
export OPENBLAS_NUM_THREADS=2

if [[ ! -f $OUT/model/config.json ]]; then
    echo "==> squeeze init (gpt2, 124M, random)" >&2
    "$SQUEEZE" init --config assets/configs/gpt2.json --out "$OUT/model" > /dev/null
fi
for t in "${TYPES[@]}"; do
    [[ -f $OUT/gpt2-$t.gguf ]] || "$SQUEEZE" export --model "$OUT/model" --format gguf --type "$t" --out "$OUT/gpt2-$t.gguf" | head -1 >&2
done
# The first 512 tokens of the test text, as a text that encodes back to exactly 512 tokens.
"$PYTHON" - "$OUT/model" "$TEXT" "$OUT/prompt.txt" <<'EOF'
import sys
from transformers import AutoTokenizer
model, text, out = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(model)
ids = tok.encode(open(text, encoding="utf-8").read()[:20000])
for n in range(512, 600):
    p = tok.decode(ids[:n])
    if len(tok.encode(p)) == 512:
        open(out, "w", encoding="utf-8").write(p)
        break
else:
    sys.exit("no prefix of the test text encodes to 512 tokens")
EOF
# (the x keeps the trailing newlines that $(...) would strip)
PROMPT=$(cat "$OUT/prompt.txt"; echo x)
PROMPT=${PROMPT%x}

: > "$OUT/rounds.jsonl"
for ((i = 1; i <= ROUNDS; i++)); do
    for t in "${TYPES[@]}"; do
        echo "==> round $i: llama.cpp $t" >&2
        f=$OUT/gpt2-$t.gguf r=$OUT/raw/llama-$t-$i
        load=$(cut -d' ' -f1 /proc/loadavg)
        /usr/bin/time -f %M -o "$r.rss" nice -n 5 "$BIN/llama-bench" -m "$f" -t 2 -p 512 -n 128 -o json > "$r.json" 2> "$r.log"
        nice -n 5 "$BIN/llama-bench" -m "$f" -t 2 -p 0 -n 128 -d 512 -o json > "$r-d512.json" 2>> "$r.log"
        echo "{\"side\": \"llama.cpp\", \"type\": \"$t\", \"round\": $i, \"loadavg\": $load, \"bench\": $(tr -d '\n' < "$r.json"), \"bench_d512\": $(tr -d '\n' < "$r-d512.json"), \"peak_rss_kb\": $(tail -1 "$r.rss")}" >> "$OUT/rounds.jsonl"
    done
    for run in "${RUNS[@]}"; do
        IFS='|' read -r t precision <<< "$run"
        echo "==> round $i: Squeeze $t (--precision $precision)" >&2
        f=$OUT/gpt2-$t.gguf r=$OUT/raw/squeeze-$t-$precision-$i
        status=0 load=$(cut -d' ' -f1 /proc/loadavg)
        /usr/bin/time -f %M -o "$r.rss" nice -n 5 "$SQUEEZE" generate --model "$f" --prompt "$PROMPT" --max-tokens 128 \
            --temperature 0 --precision "$precision" --json > "$r.json" 2> "$r.log" || status=$?
        # A failed run is kept as such (its numbers, if it printed any, are not used).
        g=$(grep '^{' "$r.json" | tail -1 || true)
        if ((status != 0)) || [[ -z $g ]]; then
            echo "    failed (exit status $status): $(grep -m1 -iE 'error|abort|free|malloc|crash' "$r.log" || true); see $r.log" >&2
            g=null
        fi
        # Decode from depth 1: a one-token prompt (llama-bench's tg128 starts from an empty context).
        # Its failure leaves only its own figure out (null), not the 512-token run's.
        status0=0
        "$SQUEEZE" generate --model "$f" --prompt "The" --max-tokens 128 --temperature 0 --precision "$precision" \
            --json > "$r-d0.json" 2>> "$r.log" || status0=$?
        g0=$(grep '^{' "$r-d0.json" | tail -1 || true)
        ((status0 == 0)) && [[ -n $g0 ]] || { echo "    one-token prompt run failed (exit status $status0); see $r.log" >&2; g0=null; }
        echo "{\"side\": \"squeeze\", \"type\": \"$t\", \"precision\": \"$precision\", \"round\": $i, \"loadavg\": $load, \"exit_status\": $status, \"generate\": $g, \"generate_d0\": $g0, \"peak_rss_kb\": $(tail -1 "$r.rss")}" >> "$OUT/rounds.jsonl"
    done
done

"$PYTHON" - "$OUT" "$BIN" "$SQUEEZE" <<'EOF'
import json, os, subprocess, sys
out, bin_dir, squeeze = sys.argv[1:]
rows = [json.loads(l) for l in open(f"{out}/rounds.jsonl")]

def bench(entries, n_prompt, n_gen):
    return next(e["avg_ts"] for e in entries if e["n_prompt"] == n_prompt and e["n_gen"] == n_gen)

llama, squeeze_runs = {}, {}
for r in rows:
    if r["side"] == "llama.cpp":
        b = llama.setdefault(r["type"], {"prefill": 0, "decode": 0, "decode_d512": 0, "rss": float("inf")})
        b["prefill"] = max(b["prefill"], bench(r["bench"], 512, 0))
        b["decode"] = max(b["decode"], bench(r["bench"], 0, 128))
        b["decode_d512"] = max(b["decode_d512"], bench(r["bench_d512"], 0, 128))
        b["rss"] = min(b["rss"], r["peak_rss_kb"] * 1024)
        b["build"] = r["bench"][0].get("build_commit"), r["bench"][0].get("build_number")
        b["cpu"] = r["bench"][0].get("cpu_info")
    else:
        g = r["generate"]
        b = squeeze_runs.setdefault((r["type"], r["precision"]), {"prefill": 0, "decode": 0, "decode_d0": 0, "rss": float("inf"), "failed": []})
        if g is None or r["exit_status"] != 0:
            b["failed"].append(r["exit_status"])
            continue
        assert len(g["prompt_ids"]) == 512, len(g["prompt_ids"])
        b["prefill"] = max(b["prefill"], g["prefill_tokens_per_second"])
        b["decode"] = max(b["decode"], g["decode_tokens_per_second"] or 0)
        b["decode_d0"] = max(b["decode_d0"], (r.get("generate_d0") or {}).get("decode_tokens_per_second") or 0)
        b["rss"] = min(b["rss"], r["peak_rss_kb"] * 1024)
        b["new_tokens"] = len(g["output_ids"]) - len(g["prompt_ids"])
        b["weight_bytes"], b["kv_cache_bytes"] = g["weight_bytes"], g["kv_cache_bytes"]

lines = ["| type | file MB | llama.cpp prefill tok/s | Squeeze prefill | ratio | llama.cpp decode tok/s (depth 0 / 512) | Squeeze decode (depth 1 / 513) | ratio (depth 0 / 512) | llama RSS MB | Squeeze RSS MB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
table = []
for (t, precision), s in squeeze_runs.items():
    l = llama[t]
    mb = os.path.getsize(f"{out}/gpt2-{t}.gguf") / 1e6
    name = t if precision == "f32" else f"{t} (Squeeze --precision {precision})"
    if s["prefill"] == 0:   # every round failed
        failed = f"failed (exit status {', '.join(map(str, sorted(set(s['failed']))))})"
        lines.append(f"| {name} | {mb:.1f} | {l['prefill']:.1f} | {failed} | | {l['decode']:.1f} / {l['decode_d512']:.1f} | {failed} | | "
                     f"{l['rss'] / 1e6:.0f} | |")
    else:
        lines.append(f"| {name} | {mb:.1f} | {l['prefill']:.1f} | {s['prefill']:.1f} | {s['prefill'] / l['prefill']:.2f} | "
                     f"{l['decode']:.1f} / {l['decode_d512']:.1f} | {s['decode_d0']:.1f} / {s['decode']:.1f} | "
                     f"{s['decode_d0'] / l['decode']:.2f} / {s['decode'] / l['decode_d512']:.2f} | "
                     f"{l['rss'] / 1e6:.0f} | {s['rss'] / 1e6:.0f} |")
        if s["failed"]:
            lines[-1] = lines[-1].replace(f"| {name} |", f"| {name} ({len(s['failed'])} round(s) failed) |", 1)
    table.append({"type": t, "squeeze_precision": precision, "file_bytes": os.path.getsize(f"{out}/gpt2-{t}.gguf"),
                  "llama": {k: v for k, v in l.items() if k not in ("build", "cpu")}, "squeeze": s})
rounds = max(r["round"] for r in rows)
build, cpu = next(iter(llama.values()))["build"], next(iter(llama.values()))["cpu"]
# The binary's own tree (it may be another checkout than these scripts').
commit = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(squeeze)), "rev-parse", "--short", "HEAD"],
                        capture_output=True, text=True).stdout.strip() or "unknown"
notes = [
    "",
    f"gpt2 shape (124M parameters, random init), 2 threads each, best of {rounds} alternating rounds; "
    f"llama.cpp {build[0]} (b{build[1]}), Squeeze {squeeze} (tree at {commit}), CPU {cpu}.",
    "Prefill: 512 prompt tokens (llama-bench pp512; Squeeze: the prompt to the first new token, one cold process). "
    "Decode: llama-bench tg128 at depth 0 and at depth 512 (`-d 512`); Squeeze the 127 tokens after the first, "
    "after the one-token prompt 'The' (depths 2..128, against llama.cpp's depth 0) and after the 512-token prompt "
    "(depths 513..640, against depth 512). RSS: peak of the process "
    "(llama-bench's pp512 + tg128 run; Squeeze's whole generate).",
    "Squeeze maps the file and runs its weights where they lie (F32 and F16 rows, Q8_0 and Q4_0 blocks), "
    "as llama.cpp does; RSS counts the mapped pages in use for both.",
]
if any(p == "bf16" for _, p in squeeze_runs) and "avx512_bf16" not in open("/proc/cpuinfo").read():
    notes.append("This CPU has no AVX-512 BF16: Squeeze's --precision bf16 prefill decodes BF16 panels and runs sgemm "
                 "(BF16Matmul's fallback), so it only saves memory traffic in decode.")
loads = [r["loadavg"] for r in rows if "loadavg" in r]
if loads:
    notes.append(f"1-minute load average before the measurements: {min(loads):.2f} to {max(loads):.2f} (2 cores).")
open(f"{out}/results.md", "w").write("\n".join(lines + notes) + "\n")
json.dump({"rounds": rounds, "llama_build": build, "cpu": cpu, "squeeze_commit": commit, "results": table,
           "all_rounds": rows}, open(f"{out}/results.json", "w"), indent=1)
print("\n".join(lines + notes))
EOF
