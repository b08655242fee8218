#!/usr/bin/env python3
"""What 16 to 256 ranks would give for the GPT-2 family, from figures measured on this machine
(scripts/bench/scaling.sh's results) and Squeeze's own planners (`squeeze compress --dry-run
--plan-ranks N`), under the assumptions printed with the tables. Stdlib only.

    scripts/bench/scaling_model.py SQUEEZE RESULTS.jsonl OUT.md

Writes OUT.md (the tables docs/scaling.md quotes) and prints it.
"""
import json, os, subprocess, sys, tempfile

squeeze, results_path, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"]
RANKS = [1, 2, 4, 8, 16, 64, 256]
PER_NODE = 8          # ranks per cluster node (one per core or socket share)
NODE_GIB = 256        # memory per cluster node
GLOBAL_BATCH = 512    # sequences of 1024 tokens per optimizer step, split over the ranks
NETWORKS = {"100 Gb/s InfiniBand (α 2 µs, β⁻¹ 12 GB/s)": (2e-6, 12e9),
            "25 GbE TCP (α 30 µs, β⁻¹ 2.8 GB/s)": (30e-6, 2.8e9)}
results = [json.loads(l) for l in open(results_path) if l.strip()]
distill = {(r["np"], r["threads"]): r for r in results if r["bench"] == "distill"}
base = distill.get((1, 1))
if base is None:
    sys.exit("scaling_model.py: no distill 1x1 point in " + results_path)
# Measured: seconds per step of 8 x 256 tokens on one rank x 1 thread, distilgpt2 student and teacher (81.9M parameters).
DISTIL_PARAMS = 81_912_576
sec_per_token_param = base["seconds"] / (8 * 256) / DISTIL_PARAMS

work = tempfile.mkdtemp(prefix="squeeze-scaling-model.")
recipes = {
    "distill": "stages:\n  - distill: {steps: 10, batch: %d, seq: 1024, micro_batch: 1}\n" % GLOBAL_BATCH,
    "lowrank": "stages:\n  - lowrank: {targets: [\"wte\", \"h.*.attn.*\", \"h.*.mlp.*\"], rank_ratio: 0.25}\n",
}
for name, text in recipes.items():
    open(os.path.join(work, name + ".yaml"), "w").write(text)


def dry_run(shape, recipe, ranks, recompute=False):
    d = os.path.join(work, shape)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(root, "assets", "configs", shape + ".json")) as src, open(os.path.join(d, "config.json"), "w") as dst:
        dst.write(src.read())
    cmd = [squeeze, "compress", "--model", d, "--recipe", os.path.join(work, recipe + ".yaml"), "--out", os.path.join(work, "out"),
           "--dry-run", "--json", "--plan-ranks", str(ranks), "--plan-ranks-per-node", str(min(ranks, PER_NODE)),
           "--plan-node-memory", str(NODE_GIB)] + (["--recompute"] if recompute else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    line = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not line:
        sys.exit(f"scaling_model.py: {' '.join(cmd)} failed: {p.stderr[-400:]}")
    return json.loads(line[-1])


def params(shape):
    c = json.load(open(os.path.join(root, "assets", "configs", shape + ".json")))
    C, L, V, P = c["n_embd"], c["n_layer"], c["vocab_size"], c["n_positions"]
    return V * C + P * C + L * (12 * C * C + 13 * C) + 2 * C


gib = lambda b: f"{b / 2**30:.1f}"
out = ["## Memory per rank: distillation with the sharded optimizer (ZeRO-1) and one teacher per node",
       "",
       f"From `squeeze compress --dry-run --plan-ranks N --plan-ranks-per-node {PER_NODE}` (the estimate the job itself",
       f"checks before allocating), micro-batch 1 x 1024 tokens, `--recompute`, {PER_NODE} ranks per node (fewer when",
       "N < 8). Per rank: weights, gradients, the 1/N shard of AdamW's moments, activations, head chunks;",
       "per node: the ranks plus one teacher in a shared window. GiB.",
       "",
       "| model | " + " | ".join(f"np={n}" for n in RANKS) + " |",
       "|---|" + "---|" * len(RANKS)]
for shape in SHAPES:
    cells = []
    for n in RANKS:
        d = dry_run(shape, "distill", n, recompute=True)
        st = d["memory"][-1]
        cells.append(f"{gib(st['per_rank_bytes'])} / {gib(st['per_node_bytes'])}")
    out.append(f"| {shape} | " + " | ".join(cells) + " |")
out += ["", "(per rank / per node)", ""]

out += ["## Distillation step time under the α-β model", "",
        f"Global batch {GLOBAL_BATCH} x 1024 tokens split over N ranks, one core each. Compute per token and",
        f"parameter from the measured 1x1 distillation step here ({base['seconds']:.2f} s for 8 x 256 tokens of",
        f"distilgpt2 with its teacher: {sec_per_token_param * 1e12:.2f} ps per token-parameter), scaled by the",
        "model's parameters (attention's T² term and the vocabulary head are inside that constant). Gradient",
        "exchange: reduce-scatter + all-gather of the F32 gradients (ZeRO-1), the bytes of an all-reduce,",
        "t = 2(N−1)·α + 2(N−1)/N · 4·params · β⁻¹, not overlapped with backward (the worst case; on 2 shared",
        "cores overlap did not pay, on a cluster the network is separate hardware). Seconds per step, and",
        "communication's share.", ""]
for net, (alpha, bw) in NETWORKS.items():
    out += [f"**{net}**", "", "| model | " + " | ".join(f"np={n}" for n in RANKS) + " |", "|---|" + "---|" * len(RANKS)]
    for shape in SHAPES:
        P = params(shape)
        cells = []
        for n in RANKS:
            compute = GLOBAL_BATCH * 1024 / n * P * sec_per_token_param
            comm = 0 if n == 1 else 2 * (n - 1) * alpha + 2 * (n - 1) / n * 4 * P / bw
            cells.append(f"{compute + comm:,.0f} s ({100 * comm / (compute + comm):.1f}%)" if compute + comm >= 10
                         else f"{compute + comm:.2f} s ({100 * comm / (compute + comm):.1f}%)")
        out.append(f"| {shape} | " + " | ".join(cells) + " |")
    out.append("")

out += ["## One-shot factorization makespan (low rank 0.25 of every block linear and wte)", "",
        "From the factorization planner (`--dry-run --plan-ranks N`): layer jobs spread by cost, wte by",
        "TSQR over the ranks its shape can use; seconds estimated from a LAPACK SVD timed on this",
        "machine's core. The makespan stops falling once the largest single job (wte's TSQR with the",
        "SVD of its stacked R on one rank, or one MLP matrix) dominates.", "",
        "| model | " + " | ".join(f"np={n}" for n in RANKS) + " |", "|---|" + "---|" * len(RANKS)]
# Each dry run times its own SVD, and on a shared machine one timing can be far off: every plan is
# rescaled to the median calibration, read back from its h.0.attn.c_proj job (a square C x C LAPACK
# job of C³ units).
plans = {}
for shape in SHAPES:
    C = json.load(open(os.path.join(root, "assets", "configs", shape + ".json")))["n_embd"]
    for n in RANKS:
        f = dry_run(shape, "lowrank", n)["factorization"]
        proj = next(j for j in f["jobs"] if j["layer"] == "h.0.attn.c_proj")
        plans[shape, n] = (f, proj["single_rank_seconds"] / C ** 3)
c_ref = sorted(c for _, c in plans.values())[len(plans) // 2]
out.insert(len(out) - 2, f"Calibration: {c_ref * 1e12:.3f} ps per m·n·min(m, n) unit (the median of the {len(plans)} dry runs' timed SVDs).")
out.insert(len(out) - 2, "")
for shape in SHAPES:
    cells = []
    for n in RANKS:
        f, c = plans[shape, n]
        wte = next(j for j in f["jobs"] if j["layer"] == "wte")
        cells.append(f"{f['makespan'] * c_ref / c:.1f} s" + (f" (wte {wte['path']})" if n in (1, 16, 256) else ""))
    out.append(f"| {shape} | " + " | ".join(cells) + " |")
out.append("")
text = "\n".join(out) + "\n"
open(out_path, "w").write(text)
print(text)
