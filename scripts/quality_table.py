#!/usr/bin/env python3
"""Formats runs/quality/* (written by scripts/quality.sh) as a markdown table."""
import json, math, os, sys

q, model, recipes = sys.argv[1], sys.argv[2], sys.argv[3:]
# Goals as ratios to the dense-distillation control at the same token budget (issues 12, 21, 25).
GOALS = {"prune-ofa": 1.01, "nm24-kd": 1.03, "lowrank-half": 1.06, "kronecker-half": 1.10, "combined": 1.20, "whole-half": 1.10,
         "lowrank-whiten-half": 1.010, "kronecker-whiten-half": 1.03, "combined-whiten": 1.04,
         "q4-gptq-kd": 1.015, "sparsegpt-q4-kd": 1.04, "bytes-eighth": 1.05, "bytes-sixteenth": 1.20}
# One-shot quantization (no training budget involved) is judged against the teacher (issue 21).
TEACHER_GOALS = {"q8-rtn": 1.002, "q4-gptq": 1.04}
# The whole model's bytes as a fraction of the teacher's F32 bytes (issue 21).
BYTE_GOALS = {"bytes-eighth": 1 / 8, "bytes-sixteenth": 1 / 16}

def load(name, kind):
    return json.load(open(os.path.join(q, f"{name}.{kind}.json")))

def linear_params(analysis):
    """Stored parameters of the block linears (non-zeros of sparse ones, factor sizes of factored ones)."""
    return sum(l["params"] for l in analysis["model"]["layers"] if l["name"].startswith("h."))

def summary(name):
    """The last line of compress --json: counts and the run's wall time."""
    return json.loads(open(os.path.join(q, f"{name}.compress.json")).read().strip().splitlines()[-1])

def stored(name):
    """Whole-model stored scalars and non-zeros after compression, the embedding included."""
    d = summary(name)
    return d["params_after"], d["nonzero_after"], d["params_before"], d["nonzero_before"]

def weight_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.startswith("model") and f.endswith(".safetensors"))

teacher = load("teacher", "eval")
t_lin = linear_params(load("teacher", "analyze"))
_, _, t_all, t_nz = stored(os.path.basename(recipes[0])[:-5])
control = load("dense-control", "eval")["perplexity"] if os.path.exists(os.path.join(q, "dense-control.eval.json")) else None
f32_bytes = 4 * t_all   # the teacher's parameters in F32 (bits per weight below: 8 x bytes / t_all)
rows = [("teacher", t_lin, t_all, t_nz, weight_bytes(model), teacher["perplexity"], 1.0, None, 1.0, "", None)]
for r in recipes:
    name = os.path.basename(r)[:-5]
    if not os.path.exists(os.path.join(q, f"{name}.eval.json")):
        continue
    e, a = load(name, "eval"), load(name, "analyze")
    lin = linear_params(a)
    all_params, nz, _, _ = stored(name)
    ratio = e["perplexity"] / teacher["perplexity"]
    to_control = e["perplexity"] / control if control else None
    stored_bytes = weight_bytes(os.path.join(q, name))
    verdicts = []
    if name in GOALS and to_control is not None:
        verdicts.append(f"<= {GOALS[name]} of control: " + ("met" if to_control <= GOALS[name] else "missed"))
    if name in TEACHER_GOALS:
        verdicts.append(f"<= {TEACHER_GOALS[name]} of teacher: " + ("met" if ratio <= TEACHER_GOALS[name] else "missed"))
    if name in BYTE_GOALS:
        frac = stored_bytes / f32_bytes
        verdicts.append(f"bytes <= 1/{round(1 / BYTE_GOALS[name])} of F32: " + ("met" if frac <= BYTE_GOALS[name] else "missed") + f" (1/{1 / frac:.1f})")
    verdict = "; ".join(verdicts)
    rows.append((name, lin, all_params, nz, stored_bytes, e["perplexity"], ratio, to_control,
                 e["tokens_per_second"] / teacher["tokens_per_second"], verdict, summary(name)["seconds"]))
lines = ["| method | block-linear params | all params stored | non-zero (all) | bytes on disk | bits / weight | test ppl | / teacher | / dense control | inference tok/s / teacher | goals | run time |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
for n, lin, allp, nz, b, p, ratio, to_c, speed, v, secs in rows:
    tc = f"{to_c:.3f}" if to_c is not None else ""
    t = f"{secs / 60:.0f} min" if secs else ""
    lines.append(f"| {n} | {lin:,} ({lin / t_lin:.2f}x) | {allp:,} | {nz:,} ({nz / t_nz:.2f}x) | {b:,} | {8 * b / t_all:.2f} | {p:.2f} | {ratio:.3f} | {tc} | {speed:.2f} | {v} | {t} |")
text = "\n".join(lines)
print(text)
open(os.path.join(q, "results.md"), "w").write(text + "\n")
json.dump([dict(zip(["method", "block_linear_params", "params", "nonzero", "bytes", "perplexity", "ratio", "ratio_to_control", "speed", "goal", "seconds"], r)) for r in rows],
          open(os.path.join(q, "results.json"), "w"), indent=1)

# The frontier: test perplexity against bytes on disk, one point per method (log-scaled bytes).
def frontier_svg(rows, path, width=640, height=400, pad=60):
    pts = [(r[4], r[5], r[0]) for r in rows]
    xs = [math.log10(b) for b, _, _ in pts]
    ys = [p for _, p, _ in pts]
    x0, x1 = min(xs) - 0.05, max(xs) + 0.05
    y0, y1 = min(ys) * 0.98, max(ys) * 1.02
    sx = lambda x: pad + (x - x0) / (x1 - x0) * (width - 2 * pad)
    sy = lambda y: height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="black"/>',
           f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
           f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">bytes on disk (log scale)</text>',
           f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">test perplexity</text>']
    for e in range(math.ceil(x0 * 4), math.floor(x1 * 4) + 1):
        x = e / 4
        out.append(f'<text x="{sx(x):.1f}" y="{height - pad + 15}" text-anchor="middle">{10 ** x / 1e6:.3g} MB</text>')
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<text x="{pad - 5}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.1f}</text>')
    for x, (b, p, n) in zip(xs, pts):
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(p):.1f}" r="3" fill="{"black" if n == "teacher" else "steelblue"}"/>')
        out.append(f'<text x="{sx(x) + 5:.1f}" y="{sy(p) - 4:.1f}">{n}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")

frontier_svg(rows, os.path.join(q, "frontier.svg"))
