#!/usr/bin/env python3
"""GGUF fixtures written by the real `gguf` package (gguf-py), for Tests/SqueezeTests/GGUFTests.swift.

    python3 -m venv /work/venv-gguf && /work/venv-gguf/bin/pip install gguf numpy
    /work/venv-gguf/bin/python scripts/make_gguf_reference.py
        writes Tests/Fixtures/gguf/{reference.gguf, aligned.gguf, reference.json}
    /work/venv-gguf/bin/python scripts/make_gguf_reference.py --check Tests/Fixtures/gguf/swift-written.gguf
        reads a file Squeeze's GGUFWriter wrote (GGUFTests, SQUEEZE_GGUF_FIXTURE_OUT) with
        gguf.GGUFReader, asserts it parses to exactly what its sidecar (same name, .json) says was
        written, and records the passed check in that sidecar ("gguf_py_check").

Run by hand, not in CI. The sidecar lists what was written: per file, the metadata in order
({"key", "type", "value"}; an array's value is {"type": element type, "values": [...]}, nested
arrays as such objects), and the tensors in order (name, ggml type name and id, row-major
`shape`, ggml-order `dims`, offset in the data section, byte count, sha256 of the bytes, and for
F32/F16/BF16 the values as Float32). Every file is also read back here with gguf.GGUFReader and
compared with the sidecar before it is written, so the sidecar is both what the writer was told
and what gguf-py's reader sees.

gguf-py writes nested arrays only with inferred element types (int -> INT32, float -> FLOAT32,
bool -> BOOL, str -> STRING, list -> ARRAY) and no empty arrays; the Swift-written fixture covers
the rest (typed nested arrays, empty arrays).
"""
import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q, GGUFValueType as V

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "Fixtures", "gguf")
UTF8 = "naïve café, 日本語, emoji 🙂"


def f32(x):
    """The Float32 nearest x, as the Python float JSON will carry exactly."""
    return float(np.float32(x))


def arr(t, values):
    return {"type": t, "values": values}


# Every value type, as scalars and as arrays, plus nested arrays (typed spec, file order after
# general.architecture, which GGUFWriter writes first).
METADATA = [
    ("test.uint8", "UINT8", 255), ("test.int8", "INT8", -128),
    ("test.uint16", "UINT16", 65535), ("test.int16", "INT16", -32768),
    ("test.uint32", "UINT32", 4294967295), ("test.int32", "INT32", -2147483648),
    ("test.float32", "FLOAT32", f32(3.14159)), ("test.bool_true", "BOOL", True), ("test.bool_false", "BOOL", False),
    ("test.string", "STRING", UTF8), ("test.string_empty", "STRING", ""),
    ("test.uint64", "UINT64", 2**64 - 1), ("test.int64", "INT64", -2**63),
    ("test.float64", "FLOAT64", 1.0000000000000002), ("test.float64_tiny", "FLOAT64", 2.5e-310),
    ("test.array.uint8", "ARRAY", arr("UINT8", [0, 1, 255])),
    ("test.array.int8", "ARRAY", arr("INT8", [-128, 0, 127])),
    ("test.array.uint16", "ARRAY", arr("UINT16", [0, 65535])),
    ("test.array.int16", "ARRAY", arr("INT16", [-32768, 32767])),
    ("test.array.uint32", "ARRAY", arr("UINT32", [0, 4294967295])),
    ("test.array.int32", "ARRAY", arr("INT32", [-2147483648, 7, 2147483647])),
    ("test.array.float32", "ARRAY", arr("FLOAT32", [f32(0.5), f32(-1.25), f32(1e-3), f32(-0.0)])),
    ("test.array.bool", "ARRAY", arr("BOOL", [True, False, True])),
    ("test.array.string", "ARRAY", arr("STRING", ["a", "", "日本語", "emoji 🙂", "tab\tnewline\n"])),
    ("test.array.uint64", "ARRAY", arr("UINT64", [0, 2**64 - 1])),
    ("test.array.int64", "ARRAY", arr("INT64", [-2**63, 2**63 - 1])),
    ("test.array.float64", "ARRAY", arr("FLOAT64", [1e-300, -2.5, 1e300])),
    ("test.array.nested", "ARRAY", arr("ARRAY", [
        arr("INT32", [1, 2, 3]), arr("STRING", ["x", "yz"]),
        arr("ARRAY", [arr("BOOL", [True]), arr("BOOL", [False, True])]), arr("FLOAT32", [f32(0.25)]),
    ])),
]

# (name, type, row-major shape); F32/F16/BF16 from random floats, quantised with gguf.quants.
TENSORS = [
    ("f32.1d", Q.F32, (7,)), ("f32.4d", Q.F32, (2, 1, 3, 2)), ("f16.2d", Q.F16, (3, 5)),
    ("bf16.3d", Q.BF16, (2, 3, 4)), ("q8_0.2d", Q.Q8_0, (3, 64)), ("q8_0.1d", Q.Q8_0, (32,)),
    ("q4_0.3d", Q.Q4_0, (2, 2, 32)), ("q4_1.2d", Q.Q4_1, (2, 32)), ("q4_k.2d", Q.Q4_K, (2, 256)),
    ("i32.1d", Q.I32, (5,)),
]
ALIGNED_TENSORS = [("a", Q.F32, (3,)), ("b", Q.Q8_0, (2, 32)), ("c", Q.F16, (2, 3)), ("d", Q.Q4_0, (1, 64))]


def tensor_data(rng, qtype, shape):
    """The array gguf-py's add_tensor takes, and its raw_dtype (None for plain numpy types)."""
    if qtype == Q.I32:
        return rng.integers(-1000, 1000, size=shape, dtype=np.int32), None
    if qtype == Q.Q4_K:  # gguf-py cannot quantise to Q4_K: random blocks (any bytes are a valid block)
        return rng.integers(0, 256, size=gguf.quant_shape_to_byte_shape(shape, qtype), dtype=np.uint8), qtype
    x = rng.standard_normal(shape).astype(np.float32)
    if qtype == Q.F32:
        return x, None
    if qtype == Q.F16:
        return x.astype(np.float16), None
    return gguf.quants.quantize(x, qtype), qtype


def floats_of(raw, qtype):
    if qtype == Q.F32:
        v = np.frombuffer(raw, dtype="<f4")
    elif qtype == Q.F16:
        v = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif qtype == Q.BF16:
        v = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        return None
    return [float(x) for x in v]


def add_metadata(w, key, vtype, value):
    if vtype != "ARRAY":
        w.add_key_value(key, value, V[vtype])
    elif value["type"] != "ARRAY":
        w.add_key_value(key, value["values"], V.ARRAY, sub_type=V[value["type"]])
    else:  # nested: gguf-py infers inner element types from the Python values
        def plain(a):
            return [plain(x) for x in a["values"]] if a["type"] == "ARRAY" else a["values"]

        def check(a):
            assert a["values"], "gguf-py cannot write empty arrays"
            inferred = {int: "INT32", float: "FLOAT32", bool: "BOOL", str: "STRING", dict: "ARRAY"}[type(a["values"][0])]
            assert inferred == a["type"], f"{key}: gguf-py would write {inferred} for {a['type']}"
            for x in a["values"]:
                if isinstance(x, dict):
                    check(x)

        for inner in value["values"]:
            check(inner)
        w.add_key_value(key, plain(value), V.ARRAY, sub_type=V.ARRAY)


def write_file(path, metadata, tensors, alignment=None):
    """Writes with gguf.GGUFWriter; returns the sidecar entry (what was written)."""
    rng = np.random.default_rng(20240611)
    w = gguf.GGUFWriter(path, arch="squeeze-test")
    meta = [{"key": "general.architecture", "type": "STRING", "value": "squeeze-test"}]
    if alignment is not None:
        w.add_custom_alignment(alignment)
        meta.append({"key": "general.alignment", "type": "UINT32", "value": alignment})
    for key, vtype, value in metadata:
        add_metadata(w, key, vtype, value)
        meta.append({"key": key, "type": vtype, "value": value})
    entries, offset, align = [], 0, alignment or 32
    for name, qtype, shape in tensors:
        data, raw_dtype = tensor_data(rng, qtype, shape)
        w.add_tensor(name, data, raw_dtype=raw_dtype)
        raw = data.tobytes()
        entries.append(tensor_entry(name, qtype, list(shape), offset, raw))
        offset += (len(raw) + align - 1) // align * align
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"version": 3, "alignment": align, "metadata": meta, "tensors": entries}


def tensor_entry(name, qtype, shape, offset, raw):
    e = {"name": name, "type": qtype.name, "type_id": int(qtype), "shape": shape, "dims": shape[::-1],
         "offset": offset, "n_bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    values = floats_of(raw, qtype)
    if values is not None:
        e["values"] = values
    return e


# --- reading back with gguf.GGUFReader ---------------------------------------------------------

def field_value(parts, i, vtype):
    """Rebuilds a typed value from GGUFReader's raw field parts (its `contents()` flattens nested
    arrays); returns (next part index, sidecar value)."""
    if vtype == V.STRING:
        return i + 2, bytes(parts[i + 1]).decode("utf-8")
    if vtype == V.ARRAY:
        etype, n = V(int(parts[i][0])), int(parts[i + 1][0])
        i += 2
        values = []
        for _ in range(n):
            i, v = field_value(parts, i, etype)
            values.append(v)
        return i, arr(etype.name, values)
    x = parts[i][0]
    if vtype == V.BOOL:
        return i + 1, bool(x)
    if vtype in (V.FLOAT32, V.FLOAT64):
        return i + 1, float(x)
    return i + 1, int(x)


def read_back(path):
    """What gguf.GGUFReader parses from `path`, in the sidecar's form (no float values)."""
    r = gguf.GGUFReader(path)
    meta = []
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = V(int(field.parts[2][0]))
        end, value = field_value(field.parts, 3, vtype)
        assert end == len(field.parts), f"{key}: {len(field.parts) - end} parts left over"
        meta.append({"key": key, "type": vtype.name, "value": value})
    tensors = []
    for t in r.tensors:
        qtype = Q(int(t.tensor_type))
        raw = bytes(np.asarray(t.data).tobytes())
        assert len(raw) == int(t.n_bytes)
        dims = [int(d) for d in t.shape]
        tensors.append(tensor_entry(t.name, qtype, dims[::-1], int(t.data_offset) - int(r.data_offset), raw))
    version = int(r.fields["GGUF.version"].parts[0][0])
    return {"version": version, "alignment": int(r.alignment), "data_offset": int(r.data_offset),
            "metadata": meta, "tensors": tensors}


def compare(path, expected):
    got = read_back(path)
    for k in ("version", "alignment", "metadata"):
        assert got[k] == expected[k], f"{path}: {k}:\n  gguf-py reads {got[k]}\n  sidecar says  {expected[k]}"
    assert len(got["tensors"]) == len(expected["tensors"]), f"{path}: tensor count"
    for g, e in zip(got["tensors"], expected["tensors"]):
        for k in g:
            assert g[k] == e[k], f"{path}: tensor {e['name']}: {k}: gguf-py reads {g[k]}, sidecar says {e[k]}"
    if "data_offset" in expected:
        assert got["data_offset"] == expected["data_offset"], f"{path}: data_offset"
    return got


def generate():
    os.makedirs(OUT, exist_ok=True)
    files = {
        "reference.gguf": (METADATA, TENSORS, None),
        "aligned.gguf": ([("general.name", "STRING", "aligned " + UTF8), ("test.array.nested", "ARRAY",
                          arr("ARRAY", [arr("INT32", [5]), arr("ARRAY", [arr("STRING", ["deep"])])]))],
                         ALIGNED_TENSORS, 64),
    }
    sidecar = {"generator": {"script": "scripts/make_gguf_reference.py", "gguf": gguf_version(),
                             "numpy": np.__version__}, "files": {}}
    for name, (meta, tensors, alignment) in files.items():
        path = os.path.join(OUT, name)
        entry = write_file(path, meta, tensors, alignment)
        entry["data_offset"] = compare(path, entry)["data_offset"]
        entry["file_size"] = os.path.getsize(path)
        sidecar["files"][name] = entry
        print(f"{name}: {entry['file_size']} bytes, {len(entry['metadata'])} keys, {len(entry['tensors'])} tensors")
    with open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8") as f:
        json.dump(sidecar, f, ensure_ascii=False, indent=1)
        f.write("\n")


def gguf_version():
    from importlib.metadata import version
    return version("gguf")


def check(path):
    """Checks a GGUF file another writer produced against its sidecar and records the result."""
    side_path = os.path.splitext(path)[0] + ".json"
    with open(side_path, encoding="utf-8") as f:
        sidecar = json.load(f)
    name = os.path.basename(path)
    compare(path, sidecar["files"][name])
    sidecar["gguf_py_check"] = {"file": name, "gguf": gguf_version(), "numpy": np.__version__,
                                "result": "passed: gguf.GGUFReader parses the file to exactly this sidecar"}
    with open(side_path, "w", encoding="utf-8") as f:
        json.dump(sidecar, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"{path}: gguf.GGUFReader {gguf_version()} parses it exactly as {side_path} says (recorded there)")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    elif len(sys.argv) == 1:
        generate()
    else:
        sys.exit(__doc__)
