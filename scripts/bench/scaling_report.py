#!/usr/bin/env python3
"""Table and plot of scripts/bench/scaling.sh's results (stdlib only).

    scaling_report.py RESULTS.jsonl TABLE.md PLOT.svg CORES

Speedup = seconds at 1x1 / seconds; efficiency = speedup / min(np x threads, CORES).
"""
import json, sys

results, table_path, svg_path, cores = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = [json.loads(l) for l in open(results) if l.strip()]
benches = list(dict.fromkeys(r["bench"] for r in rows))
base = {r["bench"]: r["seconds"] for r in rows if r["np"] == 1 and r["threads"] == 1}
# factorize-scalapack has no 1x1 point: it compares with factorize-lowrank's.
base.setdefault("factorize-scalapack", base.get("factorize-lowrank"))


def mb(n):
    return f"{n / 1e6:,.1f}"


lines = ["| bench | np x threads | seconds | speedup vs 1x1 | efficiency | MB moved per rank | peak RSS per rank (MB) |",
         "|---|---|---|---|---|---|---|"]
for r in rows:
    b = base.get(r["bench"])
    speedup = b / r["seconds"] if b and r["seconds"] > 0 else None
    used = min(r["np"] * r["threads"], cores)
    note = " (oversubscribed)" if r["np"] * r["threads"] > cores else ""
    per = " per step" if r["bench"] == "distill" else ""
    lines.append(f"| {r['bench']} | {r['np']} x {r['threads']}{note} | {r['seconds']:.2f}{per} | "
                 f"{speedup:.2f}x | {100 * speedup / used:.0f}% | {mb(r['bytes'])} | {r['peak_rss_mb']:,.0f} |"
                 if speedup else
                 f"| {r['bench']} | {r['np']} x {r['threads']}{note} | {r['seconds']:.2f}{per} | - | - | {mb(r['bytes'])} | {r['peak_rss_mb']:,.0f} |")
# The ratios the goals name, when the points exist.
def sec(bench, np_, t):
    return next((r["seconds"] for r in rows if r["bench"] == bench and r["np"] == np_ and r["threads"] == t), None)
ratios = []
for bench in benches:
    a, b, c = sec(bench, 1, 1), sec(bench, 1, 2), sec(bench, 2, 1)
    if c and a:
        ratios.append(f"- {bench}: np=2 x 1 is {a / c:.2f}x np=1 x 1" + (f" and {b / c:.2f}x np=1 x 2 threads" if b else ""))
open(table_path, "w").write("\n".join(lines + [""] + ratios) + "\n")

# Speedup against cores in use, one line per bench.
W, H, L, B, T, R = 560, 340, 60, 50, 30, 170
xs = sorted({min(r["np"] * r["threads"], 4) for r in rows}) or [1]
xmax = max(xs + [2])
pts = {b: [] for b in benches}
for r in rows:
    bb = base.get(r["bench"])
    if bb:
        pts[r["bench"]].append((r["np"] * r["threads"], bb / r["seconds"], f"{r['np']}x{r['threads']}"))
ymax = max([2.0] + [p[1] for v in pts.values() for p in v]) * 1.1
X = lambda x: L + (x - 1) / max(xmax - 1, 1) * (W - L - R)
Y = lambda y: H - B - y / ymax * (H - B - T)
colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="{W / 2 - R / 2}" y="18" text-anchor="middle">Speedup against 1 rank x 1 thread ({cores} cores)</text>',
       f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="black"/>',
       f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">ranks x threads (cores asked for)</text>',
       f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">speedup</text>',
       f'<line x1="{X(1)}" y1="{Y(1)}" x2="{X(min(xmax, cores))}" y2="{Y(min(xmax, cores))}" stroke="#999" stroke-dasharray="4"/>']
for x in range(1, xmax + 1):
    svg.append(f'<text x="{X(x)}" y="{H - B + 16}" text-anchor="middle">{x}</text>')
k = 0.0
while k <= ymax:
    svg.append(f'<text x="{L - 6}" y="{Y(k) + 4}" text-anchor="end">{k:.1f}</text>')
    k += 0.5
for i, b in enumerate(benches):
    c = colors[i % len(colors)]
    for x, y, label in sorted(pts[b]):
        svg.append(f'<circle cx="{X(min(x, xmax)):.1f}" cy="{Y(y):.1f}" r="4" fill="{c}"><title>{b} {label}: {y:.2f}x</title></circle>')
        svg.append(f'<text x="{X(min(x, xmax)) + 6:.1f}" y="{Y(y) - 4:.1f}" font-size="9" fill="{c}">{label}</text>')
    svg.append(f'<rect x="{W - R + 12}" y="{T + 18 * i}" width="10" height="10" fill="{c}"/>'
               f'<text x="{W - R + 26}" y="{T + 18 * i + 9}">{b}</text>')
svg.append(f'<text x="{W - R + 12}" y="{T + 18 * len(benches) + 12}" font-size="10" fill="#666">dashed: ideal</text>')
svg.append("</svg>")
open(svg_path, "w").write("\n".join(svg) + "\n")
print(open(table_path).read())
