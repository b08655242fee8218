#!/usr/bin/env python3
"""Formats runs/quality/* (written by scripts/quality.sh) as a markdown table."""
import json, os, sys

q, model, recipes = sys.argv[1], sys.argv[2], sys.argv[3:]
GOALS = {"prune-ofa": 1.02, "sparsegpt": 1.25, "nm24-kd": 1.08, "kronecker-kd": 1.10, "lowrank-progressive": 1.10, "combined": 1.25}

def load(name, kind):
    return json.load(open(os.path.join(q, f"{name}.{kind}.json")))

def linear_params(analysis):
    """Stored parameters of the block linears (non-zeros of sparse ones, factor sizes of factored ones)."""
    return sum(l["params"] for l in analysis["model"]["layers"] if l["name"].startswith("h."))

def stored(name):
    """Whole-model stored scalars and non-zeros after compression (last line of compress --json)."""
    d = json.loads(open(os.path.join(q, f"{name}.compress.json")).read().strip().splitlines()[-1])
    return d["params_after"], d["nonzero_after"], d["params_before"], d["nonzero_before"]

teacher = load("teacher", "eval")
t_lin = linear_params(load("teacher", "analyze"))
_, _, t_all, t_nz = stored(os.path.basename(recipes[0])[:-5])
rows = [("teacher", t_lin, t_all, t_nz, os.path.getsize(os.path.join(model, "model.safetensors")), teacher["perplexity"], 1.0, 1.0, "")]
for r in recipes:
    name = os.path.basename(r)[:-5]
    e, a = load(name, "eval"), load(name, "analyze")
    lin = linear_params(a)
    all_params, nz, _, _ = stored(name)
    ratio = e["perplexity"] / teacher["perplexity"]
    goal = GOALS.get(name)
    verdict = "" if goal is None else (f"<= {goal}: met" if ratio <= goal else f"<= {goal}: missed")
    rows.append((name, lin, all_params, nz, os.path.getsize(os.path.join(q, name, "model.safetensors")), e["perplexity"], ratio,
                 e["tokens_per_second"] / teacher["tokens_per_second"], verdict))
lines = ["| method | block-linear params | all params stored | non-zero | bytes on disk | test ppl | ppl / teacher | inference tok/s / teacher | goal |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
for n, lin, allp, nz, b, p, ratio, speed, v in rows:
    lines.append(f"| {n} | {lin:,} ({lin / t_lin:.2f}x) | {allp:,} | {nz:,} | {b:,} | {p:.2f} | {ratio:.3f} | {speed:.2f} | {v} |")
text = "\n".join(lines)
print(text)
open(os.path.join(q, "results.md"), "w").write(text + "\n")
json.dump([dict(zip(["method", "block_linear_params", "params", "nonzero", "bytes", "perplexity", "ratio", "speed", "goal"], r)) for r in rows],
          open(os.path.join(q, "results.json"), "w"), indent=1)
