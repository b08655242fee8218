#!/usr/bin/env python3
"""Formats runs/quality/* (written by scripts/quality.sh) as a markdown table."""
import json, os, sys

q, model, recipes = sys.argv[1], sys.argv[2], sys.argv[3:]
# Goals as ratios to the dense-distillation control (issue 12), same token budget.
GOALS = {"prune-ofa": 1.01, "nm24-kd": 1.03, "lowrank-half": 1.06, "kronecker-half": 1.10, "combined": 1.20, "whole-half": 1.10}

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
    goal = GOALS.get(name)
    verdict = "" if goal is None or to_control is None else (f"<= {goal}: met" if to_control <= goal else f"<= {goal}: missed")
    rows.append((name, lin, all_params, nz, weight_bytes(os.path.join(q, name)), e["perplexity"], ratio, to_control,
                 e["tokens_per_second"] / teacher["tokens_per_second"], verdict, summary(name)["seconds"]))
lines = ["| method | block-linear params | all params stored | non-zero (all) | bytes on disk | test ppl | / teacher | / dense control | inference tok/s / teacher | goal (to control) | run time |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
for n, lin, allp, nz, b, p, ratio, to_c, speed, v, secs in rows:
    tc = f"{to_c:.3f}" if to_c is not None else ""
    t = f"{secs / 60:.0f} min" if secs else ""
    lines.append(f"| {n} | {lin:,} ({lin / t_lin:.2f}x) | {allp:,} | {nz:,} ({nz / t_nz:.2f}x) | {b:,} | {p:.2f} | {ratio:.3f} | {tc} | {speed:.2f} | {v} | {t} |")
text = "\n".join(lines)
print(text)
open(os.path.join(q, "results.md"), "w").write(text + "\n")
json.dump([dict(zip(["method", "block_linear_params", "params", "nonzero", "bytes", "perplexity", "ratio", "ratio_to_control", "speed", "goal", "seconds"], r)) for r in rows],
          open(os.path.join(q, "results.json"), "w"), indent=1)
