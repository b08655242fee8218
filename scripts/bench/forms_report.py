#!/usr/bin/env python3
"""The table and plot of scripts/bench/forms.sh: per form, the best round's prefill tokens/s and
decode seconds against dense F32's, with bytes and FLOPs ratios; results.md and speedup.svg."""
import json
import sys

out = sys.argv[1]
lines_in = [json.loads(l) for l in open(f"{out}/results.jsonl")]
rows = [r for r in lines_in if "form" in r]
read_gbps = max(r["read_gbps"] for r in lines_in if "read_gbps" in r)
forms = []
for r in rows:
    if r["form"] not in forms:
        forms.append(r["form"])
best = {}
for f in forms:
    mine = [r for r in rows if r["form"] == f]
    best[f] = {"prefill": max(r["eval"]["tokens_per_second"] for r in mine),
               "decode": min(r["decode_seconds"] for r in mine),
               "bytes": mine[0]["eval"]["weight_bytes"], "flops": mine[0]["eval"]["flops_per_token"],
               "rss": max(r["eval"]["peak_rss_bytes"] or 0 for r in mine), "ppl": mine[0]["eval"]["perplexity"]}
d = best[forms[0]]
lines = ["| form | weight MB | bytes ratio | FLOP ratio | decode tok/s | decode speedup (goal) | prefill tok/s | prefill speedup (goal) | eval peak RSS MB |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
points = []
for f in forms:
    b = best[f]
    bytes_ratio, flop_ratio = d["bytes"] / b["bytes"], d["flops"] / b["flops"]
    dec, pre = d["decode"] / b["decode"], b["prefill"] / d["prefill"]
    goal_dec = 0.8 * bytes_ratio
    goal_pre = 0.7 * flop_ratio if ("low rank" in f or "kronecker" in f) else (1.4 if f == "dense bf16" else 1.0)
    lines.append(f"| {f} | {b['bytes'] / 1e6:.0f} | {bytes_ratio:.2f} | {flop_ratio:.2f} | {128 / b['decode']:.1f} | "
                 f"{dec:.2f} (>= {goal_dec:.2f}: {'met' if dec >= goal_dec else 'missed'}) | {b['prefill']:.0f} | "
                 f"{pre:.2f} (>= {goal_pre:.2f}: {'met' if pre >= goal_pre else 'missed'}) | {b['rss'] / 1e6:.0f} |")
    points.append((bytes_ratio, dec, f))
# Dense F32 decode against the read bandwidth measured in the same run (best of the rounds each).
streamed = d["bytes"] * 128 / d["decode"] / 1e9
lines += ["", f"Dense F32 decode streams {streamed:.1f} GB/s of weights = {streamed / read_gbps:.2f} of the read bandwidth "
              f"measured in the same run ({read_gbps:.1f} GB/s; goal >= 0.80: {'met' if streamed / read_gbps >= 0.8 else 'missed'})."]
open(f"{out}/results.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
# Speedup against bytes ratio, with the y = x line.
W, H, M = 640, 420, 60
xmax = max(p[0] for p in points) * 1.1
ymax = max(max(p[1] for p in points), xmax) * 1.05
sx = lambda x: M + (W - 2 * M) * x / xmax
sy = lambda y: H - M + -(H - 2 * M) * y / ymax
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">decode speedup against bytes ratio (gpt2 shape, vs dense F32)</text>',
       f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(xmax)}" y2="{sy(0)}" stroke="black"/>',
       f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(0)}" y2="{sy(ymax)}" stroke="black"/>',
       f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(min(xmax, ymax))}" y2="{sy(min(xmax, ymax))}" stroke="#999" stroke-dasharray="4"/>',
       f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(xmax)}" y2="{sy(0.8 * xmax)}" stroke="#c66" stroke-dasharray="2"/>',
       f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">bytes ratio (dense F32 bytes / form bytes)</text>',
       f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" text-anchor="middle">decode speedup</text>']
for k in range(0, int(xmax) + 1):
    svg.append(f'<text x="{sx(k)}" y="{sy(0) + 14}" text-anchor="middle">{k}</text>')
for k in range(0, int(ymax) + 1):
    svg.append(f'<text x="{sx(0) - 6}" y="{sy(k) + 4}" text-anchor="end">{k}</text>')
for x, y, f in points:
    svg.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" fill="#1f77b4"/>')
    svg.append(f'<text x="{sx(x) + 6:.1f}" y="{sy(y) - 4:.1f}">{f}</text>')
svg.append('<text x="%.1f" y="%.1f" fill="#c66">0.8 x bytes ratio (goal)</text>' % (sx(xmax * 0.62), sy(0.8 * xmax * 0.62) + 14))
svg.append("</svg>")
open(f"{out}/speedup.svg", "w").write("\n".join(svg) + "\n")
