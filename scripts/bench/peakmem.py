#!/usr/bin/env python3
"""Runs a command and reports its wall time and peak memory (stdlib only).

    scripts/bench/peakmem.py [--interval S] -- COMMAND ...

Every --interval seconds (default 0.2) it reads /proc/<pid>/smaps_rollup of the command and all
its descendants (mpirun's ranks included) and keeps:
  - peak_rss_mb:  the largest resident set of any one process (a rank's peak);
  - node_peak_mb: the largest sum of proportional set sizes (Pss) over the processes: memory a
                  node really holds, with pages shared between ranks (an MPI shared window, the
                  node-shared teacher) counted once in total, not once per rank.
Prints one JSON line: {"seconds", "peak_rss_mb", "node_peak_mb", "exit_status"} and exits with the
command's status. Sampling can miss a peak shorter than the interval; ru_maxrss of the command's
tree (also printed, as "maxrss_children_mb") bounds the largest process's peak from above.
"""
import json, os, resource, subprocess, sys, time


def descendants(root):
    children = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


def rollup(pid):
    vals = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, rest = line.partition(":")
                if k in ("Rss", "Pss"):
                    vals[k] = int(rest.split()[0])
    except OSError:
        pass
    return vals.get("Rss", 0), vals.get("Pss", 0)


def main():
    args = sys.argv[1:]
    interval = 0.2
    if args[:1] == ["--interval"]:
        interval, args = float(args[1]), args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    t0 = time.time()
    proc = subprocess.Popen(args)
    peak_rss = peak_node = 0
    while proc.poll() is None:
        rss_max = pss_sum = 0
        for p in descendants(proc.pid):
            rss, pss = rollup(p)
            rss_max, pss_sum = max(rss_max, rss), pss_sum + pss
        peak_rss, peak_node = max(peak_rss, rss_max), max(peak_node, pss_sum)
        time.sleep(interval)
    seconds = time.time() - t0
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss / 1024), "node_peak_mb": round(peak_node / 1024),
                      "maxrss_children_mb": round(maxrss / 1024), "exit_status": proc.returncode}), flush=True)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
