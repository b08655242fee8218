#!/usr/bin/env python3
"""Seed corpora for scripts/fuzz.sh, built from the repository's fixtures.

    python3 scripts/fuzz/seeds.py OUT_DIR

writes OUT_DIR/{safetensors,config,tokenizer,recipe,gguf}/*. The fixture models have GPT-2's 50257-token
vocabulary (MBs of embedding); the seeds shrink it to a few tokens so that whole model
directories fit in a fuzz input (config.json + separator + model.safetensors, a few tens of KB).
Multi-file inputs use FuzzTarget.separator (Sources/FuzzTargets/FuzzTargets.swift).
"""
import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
SEP = b"\0--8<--\0"
VOCAB = 16  # vocabulary of the shrunk models


def read(path):
    with open(path, "rb") as f:
        return f.read()


def parse_safetensors(blob):
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    return header, blob[8 + n:]


def write_safetensors(entries, metadata):
    """entries: list of (name, dtype, shape, bytes) in data order."""
    header, offset = {}, 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    js = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 8)
    return struct.pack("<Q", len(js)) + js + b"".join(e[3] for e in entries)


SIZES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


def shrink_model(directory):
    """(config.json, model.safetensors) of a fixture model with its vocabulary cut to VOCAB tokens."""
    config = json.loads(read(os.path.join(directory, "config.json")))
    old_vocab = config["vocab_size"]
    config["vocab_size"] = VOCAB
    header, data = parse_safetensors(read(os.path.join(directory, "model.safetensors")))
    metadata = header.pop("__metadata__", None)
    entries = []
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, en = e["data_offsets"]
        raw, shape = data[b:en], list(e["shape"])
        if name.endswith(("wte.weight", "wte.w0")) and shape and shape[0] == old_vocab:
            row = len(raw) // old_vocab
            raw, shape = raw[:row * VOCAB], [VOCAB] + shape[1:]
        elif "wte.weight." in name:
            raise SystemExit(f"{directory}: sparse wte is not handled by the seed shrinker")
        entries.append((name, e["dtype"], shape, raw))
    cfg = (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()
    return cfg, write_safetensors(entries, metadata)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def small_tokenizer(merge_count):
    """vocab.json + merges.txt with the 256 byte tokens, <|endoftext|> and the first merges."""
    vocab = json.loads(read(os.path.join(FIX, "tiny-gpt2", "vocab.json")))
    lines = read(os.path.join(FIX, "tiny-gpt2", "merges.txt")).decode().split("\n")
    merges = [l for l in lines[1:] if l][:merge_count]
    keep = set(bytes_to_unicode().values()) | {"<|endoftext|>"}
    for m in merges:
        a, b = m.split(" ")
        keep |= {a, b, a + b}
    ordered = sorted(keep, key=lambda t: vocab[t])
    small = {t: i for i, t in enumerate(ordered)}
    vjs = json.dumps(small, ensure_ascii=False, separators=(",", ":")).encode()
    mtxt = ("#version: 0.2\n" + "\n".join(merges) + "\n").encode()
    return vjs, mtxt


def main():
    out = sys.argv[1]
    seeds = {t: {} for t in ("safetensors", "config", "tokenizer", "recipe", "gguf")}

    # config: config.json alone (an empty weights file) and shrunk model directories.
    for name in ("tiny-gpt2", "tiny-gpt2-f16-base", "tiny-compressed"):
        d = os.path.join(FIX, name)
        seeds["config"][f"{name}-config-only"] = read(os.path.join(d, "config.json"))
        cfg, weights = shrink_model(d)
        seeds["config"][f"{name}-v{VOCAB}"] = cfg + SEP + weights
        if name == "tiny-gpt2-f16-base":  # one whole valid file (the smallest); headers below
            seeds["safetensors"][f"{name}-v{VOCAB}"] = weights

    # safetensors: a compressed model's header (every kind of entry) over almost no data.
    cfg, weights = shrink_model(os.path.join(FIX, "tiny-compressed"))
    header, _ = parse_safetensors(weights)
    metadata = header.pop("__metadata__", None)
    small = []
    for k, (name, e) in enumerate(sorted(header.items())):
        shape = [1] * len(e["shape"])
        small.append((name, e["dtype"], shape, bytes([k % 256]) * SIZES[e["dtype"]]))
    seeds["safetensors"]["tiny-compressed-names"] = write_safetensors(small, metadata)

    # safetensors: the dtype fixture, and headers of the big files with a little data after them
    # (their data offsets point past the end: the parser's bounds checks).
    seeds["safetensors"]["dtypes"] = read(os.path.join(FIX, "reference", "dtypes.safetensors"))
    for name in ("reference/compression.safetensors", "reference/gpt2_logits.safetensors"):
        blob = read(os.path.join(FIX, name))
        n = struct.unpack("<Q", blob[:8])[0]
        seeds["safetensors"][os.path.basename(name).replace(".safetensors", "-truncated")] = blob[:8 + n + 64]

    # tokenizer: small vocabularies, with and without a text part.
    for count in (0, 50, 400):
        v, m = small_tokenizer(count)
        seeds["tokenizer"][f"merges{count}"] = v + SEP + m
        seeds["tokenizer"][f"merges{count}-text"] = v + SEP + m + SEP + "Hello world, it's <|endoftext|> the  end\n".encode()
    # tokenizer.json form (an input starting with '{"model"'): the same small BPE, merges as pairs
    # (tokenizers >= 0.20) and as "left right" strings (older).
    for count, pairs in ((50, True), (400, False)):
        v, m = small_tokenizer(count)
        merges = [l.split(" ") if pairs else l for l in m.decode().split("\n")[1:] if l]
        doc = {"model": {"type": "BPE", "vocab": json.loads(v), "merges": merges}, "pre_tokenizer": {"type": "ByteLevel"}}
        seeds["tokenizer"][f"json{count}-text"] = (json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()
                                                   + SEP + "Hello world, it's <|endoftext|> the  end\n".encode())
    v, m = small_tokenizer(200)
    seeds["tokenizer"]["merges200-crlf-unicode"] = v + SEP + m.replace(b"\n", b"\r\n") + SEP + "naïve 日本語 🙂 'll 're".encode()

    # recipe: every recipe in the repository.
    recipes = os.path.join(ROOT, "recipes")
    for f in sorted(os.listdir(recipes)):
        if f.endswith(".yaml"):
            seeds["recipe"][f[:-5]] = read(os.path.join(recipes, f))
    seeds["recipe"]["tiny-compressed"] = read(os.path.join(FIX, "tiny-compressed.yaml"))

    # gguf: the fixtures gguf-py wrote and the one our writer wrote (Tests/Fixtures/gguf/), and
    # one as version 2 (the same layout).
    for name in ("reference", "aligned", "swift-written"):
        seeds["gguf"][name] = read(os.path.join(FIX, "gguf", name + ".gguf"))
    v2 = bytearray(seeds["gguf"]["aligned"])
    v2[4] = 2
    seeds["gguf"]["aligned-v2"] = bytes(v2)

    for target, files in seeds.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for name, blob in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(blob)
        print(f"{target}: {len(files)} seeds, largest {max(map(len, files.values()))} bytes")


if __name__ == "__main__":
    main()
