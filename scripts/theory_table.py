#!/usr/bin/env python3
"""The seed report's theory, measured on runs/quality (scripts/quality.sh): for each method,
how the block linears' spectral norms, stable ranks and the bound proxy
prod ||W_i||_2^2 * sum srank(W_i) (Arora et al. 2018) moved against the teacher.
Usage: scripts/theory_table.py runs/quality recipe-name..."""
import json, math, os, sys

q, names = sys.argv[1], sys.argv[2:]

def layers(name):
    d = json.load(open(os.path.join(q, f"{name}.analyze.json")))["model"]
    return {l["name"]: l for l in d["layers"] if l["name"].startswith("h.")}, d

t, td = layers("teacher")
rows = ["| method | ‖W‖₂ after / before (mean, min–max) | Σ srank before → after | layers with lower srank | log10 bound proxy before → after |",
        "|---|---|---|---|---|"]
for n in names:
    a, ad = layers(n)
    ratios = [a[k]["spectral"] / t[k]["spectral"] for k in t]
    lower = sum(1 for k in t if a[k]["stable_rank"] < t[k]["stable_rank"])
    rows.append(f"| {n} | {sum(ratios) / len(ratios):.3f} ({min(ratios):.3f}–{max(ratios):.3f}) | "
                f"{td['sum_stable_rank']:.1f} → {ad['sum_stable_rank']:.1f} | {lower}/{len(t)} | "
                f"{td['log10_bound_proxy']:.2f} → {ad['log10_bound_proxy']:.2f} |")
print("\n".join(rows))
