#!/usr/bin/env python3
"""GGUF model exports checked by the real clients, for Tests/SqueezeTests/GGUFModelTests.swift.

    PY=/work/venv/bin/python   (numpy, torch, transformers >= 5, gguf >= 0.10, safetensors, accelerate)
    swift build -c release
    $PY scripts/make_gguf_model_reference.py [--squeeze .build/release/squeeze] [--make-models]

Run by hand, never in CI. `--make-models` first writes the committed inputs (deterministic):
  Tests/Fixtures/tiny-gpt2-64/        GPT-2 2 x 64 (4 heads, 64 positions) with every parameter drawn
                                      at random by torch (seed 0), a 512-token vocabulary (GPT-2's 256
                                      byte tokens, its first 255 merges, <|endoftext|> = 511), F32
  Tests/Fixtures/tiny-gpt2-64-mixed/  that model through `squeeze compress` with
                                      Tests/Fixtures/tiny-gpt2-64-mixed.yaml: every weight form
                                      (dense, sparse, 2:4, low rank, Kronecker, Q8_0 and Q4_0 on dense
                                      weights and on the embedding, Q8_0 on low-rank factors)
  Tests/Fixtures/fuzz/gguf/model-micro-q4_0   a 1 x 32 GPT-2 (257 tokens, no merges) exported as
                                      Q4_0: the gguf fuzz target's seed of a loadable model
Then for Tests/Fixtures/tiny-gpt2 (n_embd 16: rows not a multiple of 32, the F16 fallback) and the
two models above, in each type (f32, f16, q8_0, q4_0), it runs
`squeeze export --format gguf --type T` and reads the file with gguf.GGUFReader:
  * metadata: exactly llama.cpp's gpt2 keys, value types and values, computed here from the
    model's config.json, vocab.json and merges.txt;
  * tensors: llama.cpp's names, order of Squeeze's writer, shapes, and types (F32 vectors and
    position_embd; token_embd and block matrices of the type, F16 where rows are not a multiple of 32);
  * bytes: each tensor equals gguf.quants.quantize(the dense weight in ggml's orientation, type):
    the model's own safetensors values, or for the mixed model Squeeze's densified weights
    (`squeeze export --format hf --dtype f32`). Except the layers the mixed model holds quantized
    in the file's format (a quantized dense weight): written unchanged, so their bytes equal the
    blocks in the model's model.safetensors and gguf.quants.dequantize of them equals Squeeze's
    densified weight bit for bit.
The JSON sidecar records per file its size and sha256, the metadata (arrays as count + sha256 of
their values joined by newlines), and per tensor type, shape, sha256 and source (values,
quantized, fallbackF16, unchanged): the Swift test exports again and compares.
transformers then loads files (GPT2LMHeadModel.from_pretrained(dir, gguf_file=..., n_positions=...),
which dequantizes with gguf-py) and its logits on fixed tokens are committed (all ids for the
512-token models, every 49th id for tiny-gpt2): F32 of all three models, Q8_0 and Q4_0 of the
two 64-wide ones. For the F32 files, its logits are also compared with the same model loaded from
safetensors by transformers.

Writes Tests/Fixtures/gguf-model/reference.json and logits.safetensors.
"""
import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests", "Fixtures")
OUT = os.path.join(FIX, "gguf-model")
MODELS = ["tiny-gpt2", "tiny-gpt2-64", "tiny-gpt2-64-mixed"]
TYPES = {"f32": (gguf.GGMLQuantizationType.F32, 0), "f16": (gguf.GGMLQuantizationType.F16, 1),
         "q8_0": (gguf.GGMLQuantizationType.Q8_0, 7), "q4_0": (gguf.GGMLQuantizationType.Q4_0, 2)}
TOKENS = [464, 3290, 11, 318, 257, 1110, 13, 50256]
LOGIT_FILES = [("tiny-gpt2", "f32"), ("tiny-gpt2-64", "f32"), ("tiny-gpt2-64", "q8_0"), ("tiny-gpt2-64", "q4_0"),
               ("tiny-gpt2-64-mixed", "f32"), ("tiny-gpt2-64-mixed", "q8_0"), ("tiny-gpt2-64-mixed", "q4_0")]
BLOCK = {"attn_qkv": "attn.c_attn", "attn_output": "attn.c_proj", "ffn_up": "mlp.c_fc", "ffn_down": "mlp.c_proj"}


def sh(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout


def sha(b):
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------- the committed inputs

def truncated_tokenizer(out, merges_count=255):
    """GPT-2's 256 byte tokens, its first `merges_count` merges (ids 256...), <|endoftext|> last."""
    vocab = json.load(open(os.path.join(FIX, "tiny-gpt2", "vocab.json"), encoding="utf-8"))
    lines = open(os.path.join(FIX, "tiny-gpt2", "merges.txt"), encoding="utf-8").read().split("\n")
    merges = [l for l in lines if l and not l.startswith("#version")][:merges_count]
    keep = {t: i for t, i in vocab.items() if i < 256 + merges_count}
    for k, m in enumerate(merges):
        assert keep[m.replace(" ", "")] == 256 + k, m   # GPT-2's ids after the bytes are its merges in order
    keep["<|endoftext|>"] = 256 + merges_count
    os.makedirs(out, exist_ok=True)
    json.dump(keep, open(os.path.join(out, "vocab.json"), "w", encoding="utf-8"), ensure_ascii=False)
    open(os.path.join(out, "merges.txt"), "w", encoding="utf-8").write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(keep)


def make_models(squeeze):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    d = os.path.join(FIX, "tiny-gpt2-64")
    shutil.rmtree(d, ignore_errors=True)
    vocab = truncated_tokenizer(d)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_positions=64, n_embd=64, n_layer=2, n_head=4, bos_token_id=vocab - 1,
                     eos_token_id=vocab - 1, tie_word_embeddings=True)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():   # every parameter random: LayerNorms and biases too
            p.copy_(torch.randn_like(p) * (0.2 if p.dim() == 1 else 0.05) + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0))
    m.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
            os.remove(os.path.join(d, f))
    mixed = os.path.join(FIX, "tiny-gpt2-64-mixed")
    shutil.rmtree(mixed, ignore_errors=True)
    sh(squeeze, "compress", "--model", d, "--recipe", os.path.join(FIX, "tiny-gpt2-64-mixed.yaml"), "--out", mixed)
    for f in os.listdir(mixed):
        if f not in ("config.json", "model.safetensors", "vocab.json", "merges.txt"):
            os.remove(os.path.join(mixed, f))
    with tempfile.TemporaryDirectory() as tmp:   # the fuzz seed: 1 x 32, 257 tokens, Q4_0
        tok = os.path.join(tmp, "tok")
        truncated_tokenizer(tok, merges_count=0)
        json.dump({"model_type": "gpt2", "vocab_size": 257, "n_positions": 4, "n_embd": 32, "n_layer": 1, "n_head": 1,
                   "n_inner": 32}, open(os.path.join(tmp, "config.json"), "w"))
        sh(squeeze, "init", "--config", os.path.join(tmp, "config.json"), "--tokenizer", tok, "--out", os.path.join(tmp, "micro"))
        sh(squeeze, "export", "--model", os.path.join(tmp, "micro"), "--format", "gguf", "--type", "q4_0",
           "--out", os.path.join(FIX, "fuzz", "gguf", "model-micro-q4_0"))


# ---------------------------------------------------------------- what a file must hold

def hf_name(gguf_name):
    fixed = {"token_embd.weight": "wte.weight", "position_embd.weight": "wpe.weight",
             "output_norm.weight": "ln_f.weight", "output_norm.bias": "ln_f.bias"}
    if gguf_name in fixed:
        return fixed[gguf_name]
    _, l, what, wb = gguf_name.split(".")
    return f"h.{l}." + {"attn_norm": "ln_1", "ffn_norm": "ln_2"}.get(what, BLOCK.get(what)) + "." + wb


def expected_tensors(cfg):
    """(name, row-major shape, role) in Squeeze's order."""
    C, V, P, F = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg.get("n_inner") or 4 * cfg["n_embd"]
    out = [("token_embd.weight", [V, C], "embd"), ("position_embd.weight", [P, C], "pos")]
    shapes = {"attn_qkv": (C, 3 * C), "attn_output": (C, C), "ffn_up": (C, F), "ffn_down": (F, C)}
    for l in range(cfg["n_layer"]):
        for k in ["attn_qkv", "attn_output", "ffn_up", "ffn_down"]:
            if k in ("attn_qkv", "ffn_up"):
                norm = "attn_norm" if k == "attn_qkv" else "ffn_norm"
                out += [(f"blk.{l}.{norm}.weight", [C], "vec"), (f"blk.{l}.{norm}.bias", [C], "vec")]
            i, o = shapes[k]
            out += [(f"blk.{l}.{k}.weight", [o, i], "linear"), (f"blk.{l}.{k}.bias", [o], "vec")]
    return out + [("output_norm.weight", [C], "vec"), ("output_norm.bias", [C], "vec")]


def tensor_type(role, shape, t):
    qt = TYPES[t][0]
    if role in ("vec", "pos") or t == "f32":
        return gguf.GGMLQuantizationType.F32
    if t == "f16" or shape[-1] % 32 != 0:
        return gguf.GGMLQuantizationType.F16
    return qt


def expected_metadata(model_dir, cfg, t):
    vocab = json.load(open(os.path.join(model_dir, "vocab.json"), encoding="utf-8"))
    lines = open(os.path.join(model_dir, "merges.txt"), encoding="utf-8").read().split("\n")
    merges = [l for l in lines if l and not l.startswith("#version")]
    V = cfg["vocab_size"]
    by_id = {i: tok for tok, i in vocab.items()}
    eot = vocab["<|endoftext|>"]
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(V)]
    types = [5 if i not in by_id else 3 if i == eot else 1 for i in range(V)]
    S, U32, F32, A = "STRING", "UINT32", "FLOAT32", "ARRAY"
    return [("general.architecture", S, "gpt2"), ("general.type", S, "model"), ("general.name", S, os.path.basename(model_dir)),
            ("gpt2.block_count", U32, cfg["n_layer"]), ("gpt2.context_length", U32, cfg["n_positions"]),
            ("gpt2.embedding_length", U32, cfg["n_embd"]), ("gpt2.feed_forward_length", U32, cfg.get("n_inner") or 4 * cfg["n_embd"]),
            ("gpt2.attention.head_count", U32, cfg["n_head"]),
            ("gpt2.attention.layer_norm_epsilon", F32, float(np.float32(cfg.get("layer_norm_epsilon", 1e-5)))),
            ("general.file_type", U32, TYPES[t][1]), ("general.quantization_version", U32, 2),
            ("tokenizer.ggml.model", S, "gpt2"), ("tokenizer.ggml.pre", S, "gpt-2"),
            ("tokenizer.ggml.tokens", A, ("STRING", tokens)), ("tokenizer.ggml.token_type", A, ("INT32", types)),
            ("tokenizer.ggml.merges", A, ("STRING", merges)),
            ("tokenizer.ggml.bos_token_id", U32, eot), ("tokenizer.ggml.eos_token_id", U32, eot)]


def array_record(etype, values):
    return {"element_type": etype, "count": len(values), "sha256": sha("\n".join(str(v) for v in values).encode("utf-8"))}


def read_metadata(reader):
    out = []
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        ty = f.types[0].name
        if ty == "ARRAY":
            out.append((f.name, ty, (f.types[1].name, list(f.contents()))))
        else:
            out.append((f.name, ty, f.contents()))
    return out


def quantized_layers(model_dir):
    """Layer -> format for layers that are one dense weight quantized (config.json's compression)."""
    comp = json.load(open(os.path.join(model_dir, "config.json"))).get("compression", {})
    entries = dict(comp.get("layers", {}))
    if "components" in comp.get("wte", {}):
        entries["wte"] = comp["wte"]["components"]
    out = {}
    for layer, cs in entries.items():
        if len(cs) == 1 and cs[0]["kind"] == "quantized" and cs[0]["inner"]["kind"] == "dense":
            out[layer] = cs[0]["format"]
    return out


def check_file(path, model_dir, cfg, t, dense, stored, qlayers):
    r = gguf.GGUFReader(path)
    meta = read_metadata(r)
    want = expected_metadata(model_dir, cfg, t)
    assert [(k, ty) for k, ty, _ in meta] == [(k, ty) for k, ty, _ in want], (meta, want)
    record_meta = []
    for (k, ty, v), (_, _, w) in zip(meta, want):
        assert v == w, (path, k, v if ty != "ARRAY" else len(v[1]))
        record_meta.append({"key": k, "type": ty, **({"value": v} if ty != "ARRAY" else array_record(*v))})
    names = expected_tensors(cfg)
    assert [x.name for x in r.tensors] == [n for n, _, _ in names], path
    tensors = []
    for x, (name, shape, role) in zip(r.tensors, names):
        ty = tensor_type(role, shape, t)
        assert list(reversed([int(d) for d in x.shape])) == shape and x.tensor_type == ty, (path, name, x.shape, x.tensor_type)
        got = np.array(x.data).tobytes()
        w = dense[hf_name(name)].astype(np.float32)
        if role == "linear":
            w = w.T   # Conv1D [in, out] -> [out, in], as llama.cpp's converter
        w = np.ascontiguousarray(w)
        layer = {"embd": "wte", "linear": hf_name(name)[:-len(".weight")]}.get(role)
        if ty.name.lower() == qlayers.get(layer):
            # Squeeze's own blocks, unchanged: gguf-py dequantizes them to Squeeze's weights exactly
            # (bit for bit once -0 is +0: a Q4_0 code 8 with a negative scale is -0 in both
            # dequantizers, and Squeeze's dense sum of the layer's components makes it +0).
            assert got == stored[layer], (path, name, "not the model's stored blocks")
            deq = gguf.quants.dequantize(np.frombuffer(got, dtype=np.uint8).reshape(shape[0], -1), ty).astype(np.float32)
            assert np.array_equal((deq + np.float32(0)).view(np.uint32), (w + np.float32(0)).view(np.uint32)), (path, name, "dequantized != Squeeze's weight")
            source = "unchanged"
        else:
            want_bytes = gguf.quants.quantize(w, ty).tobytes()
            assert got == want_bytes, (path, name, ty.name, "bytes differ from gguf.quants.quantize")
            source = "values" if ty.name in ("F32", "F16") and (t in ("f32", "f16") or role in ("vec", "pos")) else \
                "fallbackF16" if ty.name == "F16" else "quantized"
        tensors.append({"name": name, "type": ty.name, "shape": shape, "sha256": sha(got), "source": source})
    data = open(path, "rb").read()
    return {"model": os.path.basename(model_dir), "type": t, "file_size": len(data), "sha256": sha(data),
            "metadata": record_meta, "tensors": tensors}


def dense_weights(model, squeeze, tmp):
    d = os.path.join(FIX, model)
    if model != "tiny-gpt2-64-mixed":
        src = load_file(os.path.join(d, "model.safetensors"))
    else:
        out = os.path.join(tmp, model + "-dense")
        sh(squeeze, "export", "--model", d, "--format", "hf", "--dtype", "f32", "--out", out)
        src = load_file(os.path.join(out, "model.safetensors"))
    return {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in src.items()}


def stored_blocks(model):
    src = load_file(os.path.join(FIX, model, "model.safetensors"))
    src = {k[len("transformer."):] if k.startswith("transformer.") else k: v for k, v in src.items()}
    out = {}
    for layer, fmt in quantized_layers(os.path.join(FIX, model)).items():
        out[layer] = src[f"{layer}.weight.{fmt}"].tobytes()
    return out


def logits(model_dir, gguf_dir, gguf_name, P, ids):
    import torch
    from transformers import GPT2LMHeadModel
    m = GPT2LMHeadModel.from_pretrained(gguf_dir, gguf_file=gguf_name, n_positions=P, dtype=torch.float32).eval()
    with torch.no_grad():
        return m(torch.tensor([ids])).logits[0].numpy().astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--squeeze", default=os.environ.get("SQUEEZE", os.path.join(ROOT, ".build", "release", "squeeze")))
    ap.add_argument("--make-models", action="store_true")
    a = ap.parse_args()
    if a.make_models:
        make_models(a.squeeze)
    import torch
    import transformers
    from transformers import GPT2LMHeadModel
    files, logit_tensors, info = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in MODELS:
            d = os.path.join(FIX, model)
            cfg = json.load(open(os.path.join(d, "config.json")))
            dense = dense_weights(model, a.squeeze, tmp)
            stored, qlayers = stored_blocks(model), quantized_layers(d)
            V = cfg["vocab_size"]
            ids = [i % V for i in TOKENS]
            cols = np.arange(V) if V <= 4096 else np.unique(np.concatenate([np.arange(0, V, 49), [V - 1]]))
            for t in TYPES:
                gdir = os.path.join(tmp, f"{model}-{t}")
                os.makedirs(gdir)
                path = os.path.join(gdir, "model.gguf")
                sh(a.squeeze, "export", "--model", d, "--format", "gguf", "--type", t, "--out", path)
                key = f"{model}/{t}"
                files[key] = check_file(path, d, cfg, t, dense, stored, qlayers)
                if (model, t) in LOGIT_FILES:
                    lg = logits(d, gdir, "model.gguf", cfg["n_positions"], ids)
                    logit_tensors[key] = np.ascontiguousarray(lg[:, cols])
                    files[key]["logits"] = {"tokens": ids, "vocab_ids": cols.tolist() if V > 4096 else "all"}
                    if t == "f32" and model != "tiny-gpt2-64-mixed":
                        ref = GPT2LMHeadModel.from_pretrained(d).float().eval()
                        with torch.no_grad():
                            want = ref(torch.tensor([ids])).logits[0].numpy()
                        info[f"{key}: max |transformers(gguf) - transformers(safetensors)| logits"] = float(np.abs(lg - want).max())
                print(f"{key}: checked ({files[key]['file_size']} bytes)")
    os.makedirs(OUT, exist_ok=True)
    save_file(logit_tensors, os.path.join(OUT, "logits.safetensors"))
    sidecar = {"generator": {"script": "scripts/make_gguf_model_reference.py", "gguf": importlib.metadata.version("gguf"),
                             "transformers": transformers.__version__, "torch": torch.__version__, "numpy": np.__version__},
               "checks": info, "files": files}
    json.dump(sidecar, open(os.path.join(OUT, "reference.json"), "w", encoding="utf-8"), indent=1, sort_keys=True, ensure_ascii=False)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
