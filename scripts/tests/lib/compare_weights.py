#!/usr/bin/env python3
"""Compares the tensors of two model directories (model.safetensors, F32/F16/BF16), standard
library only: same names and shapes, integer tensors (masks) equal, and every float element within TOL (absolute, or relative to the
larger magnitude when that is above 1). Prints the worst difference; exit 1 when over TOL.

    compare_weights.py DIR_A DIR_B [TOL]        (default TOL 1e-5)
"""
import array, json, os, struct, sys


def read(directory):
    path = os.path.join(directory, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        raw = blob[a:b]
        dtype = info["dtype"]
        if dtype == "F32":
            values = array.array("f", raw)
        elif dtype == "F16":
            values = [struct.unpack_from("<e", raw, 2 * i)[0] for i in range(len(raw) // 2)]
        elif dtype == "BF16":
            values = [struct.unpack("<f", b"\0\0" + raw[2 * i:2 * i + 2])[0] for i in range(len(raw) // 2)]
        else:  # integer tensors (masks): compared byte for byte
            values = raw
        out[name] = (info["shape"], values)
    return out


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    tol = float(sys.argv[3]) if len(sys.argv) == 4 else 1e-5
    a, b = read(sys.argv[1]), read(sys.argv[2])
    if sorted(a) != sorted(b):
        sys.exit(f"different tensors: only in A {sorted(set(a) - set(b))}, only in B {sorted(set(b) - set(a))}")
    worst, where = 0.0, ""
    for name in sorted(a):
        (sa, va), (sb, vb) = a[name], b[name]
        if sa != sb:
            sys.exit(f"tensor {name}: shape {sa} vs {sb}")
        if isinstance(va, bytes):
            if va != vb:
                sys.exit(f"tensor {name}: contents differ")
            continue
        for x, y in zip(va, vb):
            d = abs(x - y) / max(1.0, abs(x), abs(y))
            if d > worst or d != d:
                worst, where = d, name
    print(f"{len(a)} tensors; worst difference {worst:.3g} in {where or '-'}")
    sys.exit(0 if worst <= tol else 1)


if __name__ == "__main__":
    main()
