#!/usr/bin/env python3
"""Adds a few small, coverage-rich inputs to a committed fuzz corpus (scripts/fuzz.sh --pick).

    python3 scripts/fuzz/pick.py CONTROL_FILE DEST_DIR COUNT

CONTROL_FILE comes from a libFuzzer `-merge=1 -merge_control_file=...` run over the fuzz corpus
and DEST_DIR. Each FT line lists the features an input added that earlier inputs (smaller ones
first) had not, so the sets are a lower bound; greedy set cover then picks, up to COUNT times,
the input with the most features not yet covered by DEST_DIR and earlier picks, per byte. Picks
are written to DEST_DIR as min-<sha1 prefix>.
"""
import hashlib
import os
import sys


def main():
    ctl, dest, limit = sys.argv[1], os.path.normpath(sys.argv[2]), int(sys.argv[3])
    lines = open(ctl).read().split("\n")
    n = int(lines[0])
    files = lines[2:2 + n]
    features = {}
    for line in lines[2 + n:]:
        if line.startswith("FT "):
            parts = line.split()
            features[int(parts[1])] = set(map(int, parts[2:]))
    in_dest = {i for i, f in enumerate(files) if os.path.normpath(os.path.dirname(f)) == dest}
    have = set().union(*(features.get(i, set()) for i in in_dest))
    total = set().union(*features.values())
    candidates = [i for i in features if i not in in_dest]
    picked = []
    while len(picked) < limit:
        best, best_score = None, 0.0
        for i in candidates:
            gain = len(features[i] - have)
            score = gain / (os.path.getsize(files[i]) + 512)
            if gain and score > best_score:
                best, best_score = i, score
        if best is None:
            break
        picked.append(best)
        have |= features[best]
        candidates.remove(best)
    for i in picked:
        data = open(files[i], "rb").read()
        with open(os.path.join(dest, "min-" + hashlib.sha1(data).hexdigest()[:12]), "wb") as f:
            f.write(data)
    size = sum(os.path.getsize(files[i]) for i in picked)
    print(f"{dest}: picked {len(picked)} inputs ({size} bytes); features (lower bound) {len(have)} of {len(total)}")


if __name__ == "__main__":
    main()
