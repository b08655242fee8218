#!/usr/bin/env python3
"""Generate the PyTorch / Hugging Face reference fixtures used by the Swift tests.

This script is run BY HAND, never in CI.  Its outputs are committed under
``Tests/Fixtures/`` and the Swift test-suite compares against them.

How to rerun
------------
    /work/venv/bin/python scripts/make_reference.py            # from the repo root
    (venv: torch, transformers, numpy, safetensors; no network access needed)
    /work/venv/bin/python scripts/make_reference.py --only intermediate
        writes only H (below) from the committed tiny-gpt2, leaving every other
        fixture untouched.

Everything is deterministic: every random draw uses an explicitly seeded
``torch.Generator`` (or ``torch.manual_seed`` right before model construction),
``torch.use_deterministic_algorithms(True)`` is on and the script runs on one
CPU thread.  The GPT-2 BPE files are read from ``assets/gpt2/{vocab.json,merges.txt}``.
Rerunning with the same torch/transformers versions reproduces the files
byte-for-byte; other versions may change the *random initialization* (A, B and
everything derived from it) but not the formats.  The versions used are
written to ``Tests/Fixtures/reference/versions.json``.

Fixtures
--------
A. ``Tests/Fixtures/tiny-gpt2/`` -- a tiny random ``GPT2LMHeadModel``:
   vocab_size=50257, n_positions=32, n_embd=16, n_layer=2, n_head=2,
   activation "gelu_new", all dropouts 0, layer_norm_epsilon=1e-5, tied
   embeddings.  Built right after ``torch.manual_seed(0)``; then, because HF
   initializes biases to 0 and LayerNorm to (1, 0), every LayerNorm weight is
   re-drawn as ``1 + 0.1*randn`` and every bias (LayerNorm and Conv1D) as
   ``0.1*randn`` (generator seed 1, parameters visited in state-dict order).
   Saved with ``save_pretrained(safe_serialization=True)`` in FLOAT32
   (``model.safetensors`` keys carry the ``transformer.`` prefix; the tied
   ``lm_head.weight`` is NOT written).  The tokenizer is
   ``GPT2Tokenizer(vocab.json, merges.txt).save_pretrained`` (transformers 5
   writes only ``tokenizer.json`` + ``tokenizer_config.json``), and
   ``vocab.json`` / ``merges.txt`` are copied next to them so the directory
   looks like the hub's ``gpt2`` checkpoint.
B. ``Tests/Fixtures/tiny-gpt2-f16-base/`` -- the SAME weights as a base
   ``GPT2Model`` (keys WITHOUT the ``transformer.`` prefix, like the hub's
   ``gpt2`` checkpoint), converted with ``.half()`` (FLOAT16) and saved the
   same way (+ tokenizer files).  transformers 5 no longer has the
   ``h.N.attn.bias`` causal-mask buffer, so no such key is written.
C. ``Tests/Fixtures/reference/dtypes.safetensors`` (written with the
   ``safetensors`` library): tensor x, shape [3, 5], stored as "f32" (F32),
   "f16" (F16) and "bf16" (BF16), plus "i64" (I64, shape [4]).  x is
   ``randn`` (seed 2) scaled by 3, with x[0,1] = 1.2345e-6 (subnormal in F16),
   x[2,4] = 60000 and x[1,2] = -0.1.
   ``dtypes.json`` = {"x": {"f32": [15], "f16": [15], "bf16": [15]},
   "i64": [4]} where each list is the stored tensor converted back to float64
   by torch (row-major), i.e. the exact value the Swift reader must produce.
D. ``Tests/Fixtures/reference/gpt2_step.{json,safetensors}`` -- one training
   step of model A computed in FLOAT64 (``model.double()``, eager attention):
   input_ids and targets are [2, 8] ids drawn with generator seed 3 (explicit
   targets, NOT HF's shifted labels); loss = F.cross_entropy(logits.view(-1, V),
   targets.view(-1)) (mean over the 16 positions).  gpt2_logits.safetensors holds
   "logits" [2, 8, 50257]; gpt2_step.safetensors holds "grad.<name>" for every parameter, <name> being
   the HF state-dict name without "transformer." (Conv1D weights in HF's
   [in, out] layout); the tied lm_head gradient is included in
   "grad.wte.weight".  All stored as F32 (cast from the float64 results).
   Size: 3.2 MB each ("logits"; "grad.wte.weight" dominates the other file).
   The json holds B, T, vocab_size, input_ids, targets (row-major), loss, and
   "adamw": 10 steps of torch.optim.AdamW (lr 0.01 constant, betas (0.9, 0.95),
   eps 1e-8, weight_decay 0.1 on every parameter with dim >= 2 = all Conv1D
   weights, wte, wpe; 0 on biases and LayerNorm) in float64 from A's weights,
   each step: forward on the same batch, loss, backward,
   clip_grad_norm_(params, 1.0), step.  losses[i] is the loss before step i
   (i = 0..9), losses[10] after the 10th step.  clip_grad_norm_ scales all
   grads by min(1, 1.0 / (total_norm + 1e-6)) (total_norm = global L2 norm).  grad_norms[i] is the global
   grad norm (before clipping) at step i; grad_norm_step0 = grad_norms[0]
   (stored both at top level and inside "adamw").
   torch's AdamW: p *= 1 - lr*wd; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
   p -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).
E. ``Tests/Fixtures/reference/tokenizer.json`` -- {"cases": [{"text", "ids",
   "roundtrip"}]}.  transformers 5 dropped the slow (pure Python)
   GPT2Tokenizer -- ``GPT2Tokenizer`` is now backed by the Rust ``tokenizers``
   library.  So this script contains a faithful port of the slow tokenizer
   (OpenAI's encoder.py == transformers 4.x ``tokenization_gpt2.py``, with
   "<|endoftext|>" split off as a special token) and asserts that both produce
   identical ids and identical decodes for every case.  "roundtrip" is
   ``decode(ids) == text`` (byte-level decode, no clean-up of spaces, special
   tokens kept).
E2. ``Tests/Fixtures/reference/tokenizer-json/`` -- a model directory's
   tokenizer as transformers 5 saves it: only ``tokenizer.json`` (+
   tokenizer_config.json), written by ``GPT2Tokenizer.save_pretrained`` (the
   Rust ``tokenizers`` library).  To keep it small (about 60 kB) it is GPT-2's
   BPE cut to its first 2000 merges: ids 0..255 are the byte tokens, 256..2255
   the merges' results (GPT-2 numbers merged tokens in merge order), 2256
   "<|endoftext|>".  ``cases.json`` holds {"cases": [{"text", "ids"}]}: the ids
   that saved tokenizer, reloaded by transformers, gives for E's texts.
F. ``Tests/Fixtures/reference/eval.json`` -- perplexity of model A (FLOAT64) on
   the opening of "Pride and Prejudice" (public domain, inline below), using
   the HF perplexity-guide sliding window with max_length = n_positions = 32
   for strides 32, 16 and 7, exactly:
       for begin in range(0, seq_len, stride):
           end = min(begin + max_length, seq_len); trg_len = end - prev_end
           ids = enc[begin:end]; target = ids.clone(); target[:-trg_len] = -100
           loss = model(ids, labels=target).loss
           num_loss_tokens = labels scored after the shift inside the model
           nll_sum += loss * num_loss_tokens; n_tokens += num_loss_tokens
           prev_end = end; if end == seq_len: break
       ppl = exp(nll_sum / n_tokens)
   NOTE 1: HF's loss function casts logits to float32 before cross-entropy, so
   ``loss`` is recomputed here in float64 with identical semantics (labels
   shifted by one inside, -100 ignored, mean over the remaining labels) and
   checked against HF's value (|diff| < 1e-5).
   NOTE 2: the guide multiplies by "num_valid - 1", an approximation: after
   the first window the model averages over trg_len labels, not trg_len - 1.
   This fixture weights each window by the labels it really scores, so every
   token after the first is scored exactly once (tokens = len(ids) - 1).
   "nll" = nll_sum / n_tokens, "tokens" = n_tokens.
G. ``Tests/Fixtures/reference/generate.json`` -- greedy decoding with model A
   (float32 ``model.generate(ids, do_sample=False, max_new_tokens=20,
   pad_token_id=50256)``), verified to give the same ids in float64 and with a
   hand-written argmax loop, and that no step is a near tie (top-1 minus top-2
   logit > 1e-4).  prompt 6 tokens + 20 new <= n_positions = 32, so
   max_new_tokens stays 20.  (The random model keeps repeating one token
   after the prompt; that is expected of a random 2-layer model.)
H. Intermediate-layer distillation (Squeeze's ``distill.hidden`` /
   ``distill.attention`` with the KD and CE terms), one step in FLOAT64.
   Teacher: model A.  Student: ``Tests/Fixtures/tiny-gpt2-student/`` = model A
   with every parameter (``named_parameters()`` order, the tied wte once) plus
   ``0.05*randn`` (generator seed 4), saved with
   ``save_pretrained(safe_serialization=True)`` in FLOAT32; only config.json and
   model.safetensors are kept (no tokenizer; 3.2 MB).  ids and targets: [2, 8]
   drawn with generator seed 5 (ids first, then targets; all scored).  Both
   models ``.double()``, eager attention, dropouts 0; L_s = 2, layer map identity.
       kd        = alpha * tau^2 * mean_rows KL(softmax(z_T/tau) || softmax(z_S/tau))
       ce        = mean_rows CE(z_S, targets)
       hidden    = (1/L_s) sum_l mean_{rows, channels} (h_S^l - h_T^l)^2
       attention = (1/L_s) sum_l mean_{heads, query rows} KL(P_T^l || P_S^l)
       loss      = kd + (1 - alpha) * ce + w_h * hidden + w_a * attention
   with alpha = 0.5, tau = 2, w_h = 0.7, w_a = 0.3, rows = the B*T positions.
   h^l is the OUTPUT of block l (forward hook on ``transformer.h[l]``: the
   residual stream, before ln_f for the last block); P^l the block's eager
   attention probabilities (``output_attentions=True``), each KL over the keys
   a query row sees (causal; masked entries contribute 0).  The teacher runs
   under no_grad.  ``reference/intermediate_kd.json`` holds B, T, seeds, ids,
   targets (row-major), alpha, temperature, w_h, w_a, layer_map, the four terms
   (kd includes alpha*tau^2 like Squeeze's kd sum / N; ce, hidden and attention
   are unweighted) and loss; ``wte_rows`` = the sorted distinct ids.
   ``reference/intermediate_kd.safetensors`` (F32, cast from float64):
   "grad.<name>" = d loss / d parameter for every student parameter (names and
   layouts as in D: no "transformer.", Conv1D [in, out], tied lm_head gradient
   inside "grad.wte.weight"), and the intermediate terms alone:
   "hidden.grad.<name>" = d (w_h * hidden) and "attention.grad.<name>" =
   d (w_a * attention), where for wte only the rows ``wte_rows`` are stored
   ("hidden.grad.wte.rows", [len(wte_rows), 16]; every other row of those
   gradients is exactly 0, asserted here).  3.3 MB.

Sanity checks performed at the end (full run): reload A and B with from_pretrained(local
dir) and compare logits with the in-memory models; reload dtypes.safetensors;
print keys/dtypes of every safetensors file and the size of every file
(each must stay < 5 MB).
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys

import numpy as np
import regex
import torch
import torch.nn.functional as F
import transformers
import safetensors
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model, GPT2Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = os.path.join(ROOT, "assets", "gpt2", "vocab.json")
MERGES = os.path.join(ROOT, "assets", "gpt2", "merges.txt")
FIX = os.path.join(ROOT, "Tests", "Fixtures")
DIR_A = os.path.join(FIX, "tiny-gpt2")
DIR_B = os.path.join(FIX, "tiny-gpt2-f16-base")
DIR_REF = os.path.join(FIX, "reference")
DIR_STUDENT = os.path.join(FIX, "tiny-gpt2-student")
MAX_FILE_BYTES = 5 * 1024 * 1024

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def dump_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def tiny_config():
    return GPT2Config(
        vocab_size=50257,
        n_positions=32,
        n_embd=16,
        n_layer=2,
        n_head=2,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )


# --------------------------------------------------------------------------
# A / B: tiny model
# --------------------------------------------------------------------------
def build_model_a():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    g = gen(1)
    with torch.no_grad():
        for name, p in model.named_parameters():  # state-dict order, deterministic
            if name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif ".ln_" in name and name.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
    assert model.lm_head.weight is model.transformer.wte.weight
    model.eval()
    return model


def save_tokenizer(d):
    tok = GPT2Tokenizer(VOCAB, MERGES)
    tok.save_pretrained(d)
    # transformers 5 writes tokenizer.json (3.5 MB, a re-encoding of the same BPE);
    # keep the classic hub files instead, which both Squeeze and transformers read.
    os.remove(os.path.join(d, "tokenizer.json"))
    shutil.copyfile(VOCAB, os.path.join(d, "vocab.json"))
    shutil.copyfile(MERGES, os.path.join(d, "merges.txt"))


def fresh_dir(d):
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)


def st_keys(path):
    with safe_open(path, "pt") as f:
        return [(k, f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) for k in f.keys()]


def print_st(path):
    print(f"  {os.path.relpath(path, ROOT)}:")
    for k, dt, shape in st_keys(path):
        print(f"    {k:40s} {dt:5s} {shape}")


def write_a_b(model_a):
    fresh_dir(DIR_A)
    model_a.save_pretrained(DIR_A, safe_serialization=True)
    save_tokenizer(DIR_A)

    fresh_dir(DIR_B)
    base = GPT2Model(tiny_config())
    base.load_state_dict(model_a.transformer.state_dict(), strict=True)
    base = base.half().eval()
    base.save_pretrained(DIR_B, safe_serialization=True)
    save_tokenizer(DIR_B)
    return base


# --------------------------------------------------------------------------
# C: dtypes
# --------------------------------------------------------------------------
def write_dtypes():
    x = 3.0 * torch.randn(3, 5, generator=gen(2), dtype=torch.float64)
    x[0, 1] = 1.2345e-6  # subnormal in F16 (min normal 6.1e-5)
    x[1, 2] = -0.1
    x[2, 4] = 60000.0    # exactly representable in F16, rounds in BF16
    assert (x < 0).any()
    tensors = {
        "f32": x.to(torch.float32).contiguous(),
        "f16": x.to(torch.float16).contiguous(),
        "bf16": x.to(torch.bfloat16).contiguous(),
        "i64": torch.tensor([-3, 0, 42, 2**40 + 7], dtype=torch.int64),
    }
    path = os.path.join(DIR_REF, "dtypes.safetensors")
    save_file(tensors, path)
    # Read back from disk and convert to float64 -- these are the expected values.
    back = {}
    with safe_open(path, "pt") as f:
        for k in ("f32", "f16", "bf16"):
            back[k] = [float(v) for v in f.get_tensor(k).to(torch.float64).reshape(-1).tolist()]
        i64 = [int(v) for v in f.get_tensor("i64").tolist()]
    assert back["f16"][1] != 0.0 and abs(back["f16"][1]) < 6.1e-5, "expected an f16 subnormal"
    dump_json(os.path.join(DIR_REF, "dtypes.json"), {"x": back, "i64": i64})
    print("  dtypes x (float64 source):", [round(v, 6) for v in x.reshape(-1).tolist()])
    print("  f16 subnormal:", back["f16"][1], " bf16(60000):", back["bf16"][14])


# --------------------------------------------------------------------------
# D: one step + AdamW
# --------------------------------------------------------------------------
def grads_name(n):
    assert n.startswith("transformer."), n
    return "grad." + n[len("transformer."):]


def step_loss(model, input_ids, targets):
    logits = model(input_ids).logits
    V = logits.shape[-1]
    return logits, F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))


def write_step(model_a):
    B, T, V = 2, 8, 50257
    g = gen(3)
    input_ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)

    model = copy.deepcopy(model_a).double()
    model.set_attn_implementation("eager")
    model.train()  # dropouts are 0 anyway
    named = list(model.named_parameters())  # tied lm_head de-duplicated
    assert not any(n.startswith("lm_head") for n, _ in named)

    model.zero_grad()
    logits, loss = step_loss(model, input_ids, targets)
    loss.backward()
    save_file({"logits": logits.detach().to(torch.float32).contiguous()},
              os.path.join(DIR_REF, "gpt2_logits.safetensors"))
    tensors = {}
    for n, p in named:
        tensors[grads_name(n)] = p.grad.detach().to(torch.float32).contiguous()
    grad_norm0 = torch.sqrt(sum((p.grad ** 2).sum() for _, p in named)).item()
    save_file(tensors, os.path.join(DIR_REF, "gpt2_step.safetensors"))
    print(f"  loss = {loss.item():.12f}  (ln V = {math.log(V):.6f})  |g| = {grad_norm0:.6e}")

    # AdamW run (fresh float64 copy of A)
    model = copy.deepcopy(model_a).double()
    model.set_attn_implementation("eager")
    model.train()
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.dim() >= 2]
    no_decay = [p for n, p in named if p.dim() < 2]
    decay_names = [n for n, p in named if p.dim() >= 2]
    assert len(decay) == 2 + 4 * 2, decay_names
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.01, betas=(0.9, 0.95), eps=1e-8,
    )
    params = [p for _, p in named]
    losses, grad_norms = [], []
    for _ in range(10):
        opt.zero_grad(set_to_none=True)
        _, l = step_loss(model, input_ids, targets)
        l.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        losses.append(l.item())
        grad_norms.append(gn.item())
        opt.step()
    with torch.no_grad():
        losses.append(step_loss(model, input_ids, targets)[1].item())
    assert abs(losses[0] - loss.item()) < 1e-12
    assert abs(grad_norms[0] - grad_norm0) < 1e-9 * max(1.0, grad_norm0)
    print("  adamw losses:", [round(v, 6) for v in losses])

    dump_json(os.path.join(DIR_REF, "gpt2_step.json"), {
        "B": B, "T": T, "vocab_size": V,
        "input_ids": input_ids.reshape(-1).tolist(),
        "targets": targets.reshape(-1).tolist(),
        "loss": loss.item(),
        "grad_norm_step0": grad_norm0,
        "adamw": {
            "lr": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
            "weight_decay": 0.1, "grad_clip": 1.0,
            "decay": "every parameter with dim >= 2 (all Conv1D weights, wte, wpe); none on biases and LayerNorm",
            "losses": losses,
            "grad_norm_step0": grad_norm0,
            "grad_norms": grad_norms,
        },
    })
    return input_ids, logits.detach()


# --------------------------------------------------------------------------
# E: tokenizer
# --------------------------------------------------------------------------
class SlowGPT2Tokenizer:
    """Port of the slow tokenizer (OpenAI encoder.py / transformers 4.x)."""

    PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    SPECIAL = "<|endoftext|>"

    def __init__(self, vocab_file, merges_file):
        with open(vocab_file, encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().split("\n")[1:-1]
        self.bpe_ranks = {tuple(l.split()): i for i, l in enumerate(lines)}
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        self.byte_encoder = dict(zip(bs, map(chr, cs)))
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        self.cache[token] = word
        return word

    def encode(self, text):
        ids = []
        for chunk in regex.split("(" + regex.escape(self.SPECIAL) + ")", text):
            if chunk == self.SPECIAL:
                ids.append(self.encoder[self.SPECIAL])
                continue
            for tok in self.PAT.findall(chunk):
                mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
                ids.extend(self.encoder[t] for t in self.bpe(mapped))
        return ids

    def decode(self, ids):
        s = "".join(self.decoder[i] for i in ids)
        return bytearray(self.byte_decoder[c] for c in s).decode("utf-8", errors="replace")


LONG_PARAGRAPH = (
    "In 2026, the Squeeze project set out to shrink GPT-2 (124M parameters) by 4x "
    "without losing more than ~5% perplexity. Dr. Müller's team tried three ideas: "
    "pruning, quantization to int8/fp16, and knowledge-distillation at T=2.0. "
    "\"It's not magic,\" she said; \"it's arithmetic!\" The café on Rue de l'Église "
    "served them 12 espressos/day — roughly €3.50 each.\n\n"
    "Results:\n\t* loss: 3.2815 -> 3.4102\n\t* speed: 1.9x faster (M2, 8 threads)\n"
    "東京 and Zürich collaborators sent 👍🏽 emojis. Next step?  Ship it... "
    "or wait until 2027-01-15?!  "
)

PRIDE_AND_PREJUDICE = (
    "It is a truth universally acknowledged, that a single man in possession of a "
    "good fortune, must be in want of a wife.\n\n"
    "However little known the feelings or views of such a man may be on his first "
    "entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one "
    "or other of their daughters.\n\n"
    "\"My dear Mr. Bennet,\" said his lady to him one day, \"have you heard that "
    "Netherfield Park is let at last?\"\n\n"
    "Mr. Bennet replied that he had not.\n\n"
    "\"But it is,\" returned she; \"for Mrs. Long has just been here, and she told "
    "me all about it.\"\n\n"
    "Mr. Bennet made no answer.\n\n"
    "\"Do you not want to know who has taken it?\" cried his wife impatiently.\n\n"
    "\"You want to tell me, and I have no objection to hearing it.\"\n\n"
    "This was invitation enough.\n\n"
    "\"Why, my dear, you must know, Mrs. Long says that Netherfield is taken by a "
    "young man of large fortune from the north of England; that he came down on "
    "Monday in a chaise and four to see the place, and was so much delighted with "
    "it, that he agreed with Mr. Morris immediately; that he is to take possession "
    "before Michaelmas, and some of his servants are to be in the house by the end "
    "of next week.\"\n\n"
    "\"What is his name?\"\n\n"
    "\"Bingley.\"\n\n"
    "\"Is he married or single?\"\n\n"
    "\"Oh! Single, my dear, to be sure! A single man of large fortune; four or five "
    "thousand a year. What a fine thing for our girls!\"\n\n"
    "\"How so? How can it affect them?\"\n\n"
    "\"My dear Mr. Bennet,\" replied his wife, \"how can you be so tiresome! You "
    "must know that I am thinking of his marrying one of them.\"\n\n"
    "\"Is that his design in settling here?\"\n\n"
    "\"Design! Nonsense, how can you talk so! But it is very likely that he may "
    "fall in love with one of them, and therefore you must visit him as soon as he "
    "comes.\"\n\n"
    "\"I see no occasion for that. You and the girls may go, or you may send them "
    "by themselves, which perhaps will be still better, for as you are as handsome "
    "as any of them, Mr. Bingley may like you the best of the party.\"\n\n"
    "\"My dear, you flatter me. I certainly have had my share of beauty, but I do "
    "not pretend to be anything extraordinary now. When a woman has five grown-up "
    "daughters, she ought to give over thinking of her own beauty.\"\n\n"
    "\"In such cases, a woman has not often much beauty to think of.\"\n\n"
    "\"But, my dear, you must indeed go and see Mr. Bingley when he comes into the "
    "neighbourhood.\"\n\n"
    "\"It is more than I engage for, I assure you.\"\n"
)

TOKENIZER_CASES = [
    "Hello world! This is a plain English sentence about compressing language models.",
    "The quick brown fox jumps over the lazy dog.",
    "café naïve Zürich façade résumé Ångström",
    "日本語のテキスト 中文文本 한국어 텍스트",
    "emoji: 😀 👍 👍🏽 👨‍👩‍👧 🇫🇷 ❤️",
    "a  b   c    d     e      f",
    "tab\tseparated\t\tvalues\t",
    "line one\n\n\nline two\r\nline three\r\n",
    "I'm sure you're right; they'll see it's fine, we've said so, don't worry. He'd know.",
    "IT'S LOUD, WE'LL SEE, DON'T SHOUT, I'M HERE, YOU'RE THERE",
    "1234567 3.14159 2026-11-25",
    "Wait!!!???... What?!?! ---- ((( ))) ... ,,,",
    "   leading and trailing whitespace   ",
    "\n\tleading newline and tab, trailing newline\n",
    "First sentence ends here.<|endoftext|>A second document starts here.",
    "<|endoftext|>",
    " ",
    "",
    LONG_PARAGRAPH,
]


def write_tokenizer_json():
    with open(VOCAB, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(MERGES, encoding="utf-8") as f:
        merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")][:2000]
    small = {tok: i for tok, i in vocab.items() if i < 256}
    for i, m in enumerate(merges):
        merged = m.replace(" ", "")
        assert vocab[merged] == 256 + i, (m, vocab[merged])  # GPT-2 numbers merges in order
        small[merged] = 256 + i
    small["<|endoftext|>"] = 256 + len(merges)
    d = os.path.join(DIR_REF, "tokenizer-json")
    fresh_dir(d)
    work = os.path.join(d, "_source")
    os.makedirs(work)
    with open(os.path.join(work, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(small, f, ensure_ascii=False)
    with open(os.path.join(work, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    GPT2Tokenizer(os.path.join(work, "vocab.json"), os.path.join(work, "merges.txt")).save_pretrained(d)
    shutil.rmtree(work)
    for extra in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        if os.path.exists(os.path.join(d, extra)):
            os.remove(os.path.join(d, extra))
    assert sorted(os.listdir(d)) == ["tokenizer.json", "tokenizer_config.json"], os.listdir(d)
    reloaded = GPT2Tokenizer.from_pretrained(d)
    cases = [{"text": t, "ids": reloaded.encode(t)} for t in TOKENIZER_CASES]
    dump_json(os.path.join(d, "cases.json"), {"cases": cases})
    print(f"  tokenizer.json: {len(small)} tokens, {len(merges)} merges, {len(cases)} cases")


def write_tokenizer():
    slow = SlowGPT2Tokenizer(VOCAB, MERGES)
    fast = GPT2Tokenizer(VOCAB, MERGES)
    assert len(fast) == 50257
    cases = []
    for text in TOKENIZER_CASES:
        ids = slow.encode(text)
        ids_fast = fast.encode(text)
        assert ids == ids_fast, (text, ids, ids_fast)
        dec = slow.decode(ids)
        dec_fast = fast.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        assert dec == dec_fast, (text, dec, dec_fast)
        rt = dec == text
        cases.append({"text": text, "ids": ids, "roundtrip": rt})
        print(f"  roundtrip={rt!s:5s} n={len(ids):3d}  {text[:60]!r}")
    dump_json(os.path.join(DIR_REF, "tokenizer.json"), {"cases": cases})
    return fast


# --------------------------------------------------------------------------
# F: perplexity
# --------------------------------------------------------------------------
def causal_lm_loss64(logits, labels):
    """HF ForCausalLMLoss semantics, but in the logits' dtype (float64)."""
    shift = F.pad(labels, (0, 1), value=-100)[..., 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), shift.reshape(-1), ignore_index=-100)


def write_eval(model_a, tok):
    model = copy.deepcopy(model_a).double().eval()
    model.set_attn_implementation("eager")
    enc = torch.tensor(tok.encode(PRIDE_AND_PREJUDICE))
    assert enc.tolist() == SlowGPT2Tokenizer(VOCAB, MERGES).encode(PRIDE_AND_PREJUDICE)
    seq_len = enc.numel()
    max_length = model.config.n_positions
    print(f"  eval text: {len(PRIDE_AND_PREJUDICE)} chars, {seq_len} tokens")
    results = []
    for stride in (32, 16, 7):
        nll_sum, n_tokens, prev_end = 0.0, 0, 0
        with torch.no_grad():
            for begin in range(0, seq_len, stride):
                end = min(begin + max_length, seq_len)
                trg_len = end - prev_end
                ids = enc[begin:end].unsqueeze(0)
                target = ids.clone()
                target[:, :-trg_len] = -100
                out = model(ids, labels=target)
                loss = causal_lm_loss64(out.logits, target)
                assert abs(loss.item() - out.loss.item()) < 1e-5, (loss.item(), out.loss.item())
                # Labels actually scored after the shift: every token exactly once overall.
                shifted = F.pad(target, (0, 1), value=-100)[..., 1:]
                num_loss_tokens = int((shifted != -100).sum().item())
                nll_sum += loss.item() * num_loss_tokens
                n_tokens += num_loss_tokens
                prev_end = end
                if end == seq_len:
                    break
        nll = nll_sum / n_tokens
        results.append({"stride": stride, "perplexity": math.exp(nll), "nll": nll, "tokens": n_tokens})
        print(f"  stride {stride:2d}: ppl {math.exp(nll):.6f}  nll {nll:.9f}  tokens {n_tokens}")
    dump_json(os.path.join(DIR_REF, "eval.json"), {
        "text": PRIDE_AND_PREJUDICE, "ids": enc.tolist(), "n_positions": max_length, "results": results,
    })


# --------------------------------------------------------------------------
# G: greedy generation
# --------------------------------------------------------------------------
def greedy_manual(model, ids, n):
    ids = ids.clone()
    with torch.no_grad():
        for _ in range(n):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids


def write_generate(model_a, tok):
    prompt = "It is a truth universally acknowledged"
    prompt_ids = tok.encode(prompt)
    n_pos = model_a.config.n_positions
    max_new = min(20, n_pos - len(prompt_ids))
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out32 = model_a.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new, pad_token_id=50256)
        m64 = copy.deepcopy(model_a).double().eval()
        out64 = m64.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=max_new, pad_token_id=50256)
    assert out32.tolist() == out64.tolist(), (out32, out64)
    manual = greedy_manual(m64, ids, out32.shape[1] - ids.shape[1])
    assert manual.tolist() == out32.tolist(), (manual, out32)
    # Make sure no step is a near-tie that a float32 implementation could flip.
    with torch.no_grad():
        lg = m64(out32).logits[0, len(prompt_ids) - 1:-1]
    top2 = lg.topk(2, dim=-1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    assert margin > 1e-4, margin
    print(f"  smallest top-1/top-2 logit margin over the generated steps: {margin:.4g}")
    if out32.shape[1] - ids.shape[1] != max_new:
        print("  NOTE: generation stopped early (EOS)")
    out = out32[0].tolist()
    dump_json(os.path.join(DIR_REF, "generate.json"), {
        "prompt": prompt, "prompt_ids": prompt_ids, "max_new_tokens": max_new,
        "output_ids": out, "note": "greedy",
    })
    print(f"  prompt_ids {prompt_ids} -> new {out[len(prompt_ids):]}")
    print(f"  decoded: {tok.decode(out)!r}")


# --------------------------------------------------------------------------
# H: intermediate-layer distillation
# --------------------------------------------------------------------------
IKD = {"alpha": 0.5, "temperature": 2.0, "w_h": 0.7, "w_a": 0.3}
IKD_STUDENT_SEED, IKD_BATCH_SEED = 4, 5


def build_student(model_a):
    student = copy.deepcopy(model_a)
    assert student.lm_head.weight is student.transformer.wte.weight
    g = gen(IKD_STUDENT_SEED)
    with torch.no_grad():
        for _, p in student.named_parameters():  # tied wte visited once
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return student.eval()


def run_with_blocks(model, ids):
    """Logits, every block's output (residual stream) and attention probabilities."""
    outs = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, l=l: outs.__setitem__(l, o[0] if isinstance(o, tuple) else o))
             for l, blk in enumerate(model.transformer.h)]
    try:
        r = model(ids, output_attentions=True, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    L = len(model.transformer.h)
    blocks = [outs[l] for l in range(L)]
    # hidden_states[l + 1] is block l's output except for the last entry (after ln_f).
    for l in range(L - 1):
        assert torch.equal(blocks[l], r.hidden_states[l + 1]), l
    assert len(r.attentions) == L
    return r.logits, blocks, list(r.attentions)


def intermediate_kd_terms(student, teacher, ids, targets, alpha, tau):
    with torch.no_grad():
        zt, ht, pt = run_with_blocks(teacher, ids)
    zs, hs, ps = run_with_blocks(student, ids)
    V = zs.shape[-1]
    zs, zt = zs.reshape(-1, V), zt.reshape(-1, V)
    log_pt, log_ps = F.log_softmax(zt / tau, -1), F.log_softmax(zs / tau, -1)
    kd = alpha * tau ** 2 * (log_pt.exp() * (log_pt - log_ps)).sum(-1).mean()
    ce = F.cross_entropy(zs, targets.reshape(-1))
    L = len(hs)
    hidden = sum(((hs[l] - ht[l]) ** 2).mean() for l in range(L)) / L
    T = ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    att = 0.0
    for l in range(L):
        P_t, P_s = pt[l], ps[l]                       # [B, NH, T, T]
        assert (P_t.masked_fill(causal, 0) == 0).all() and (P_s.masked_fill(causal, 0) == 0).all()
        lt = torch.log(P_t.masked_fill(~causal, 1.0))  # masked entries: P = 0, contribute 0
        ls = torch.log(P_s.masked_fill(~causal, 1.0))
        kl = (P_t * (lt - ls)).masked_fill(~causal, 0.0).sum(-1)  # [B, NH, T]
        att = att + kl.mean()
    attention = att / L
    return {"kd": kd, "ce": ce, "hidden": hidden, "attention": attention}


def write_intermediate(model_a):
    # The student, FLOAT32 on disk.
    student32 = build_student(model_a)
    fresh_dir(DIR_STUDENT)
    student32.save_pretrained(DIR_STUDENT, safe_serialization=True)
    for fn in os.listdir(DIR_STUDENT):
        if fn not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(DIR_STUDENT, fn))
    re_s = GPT2LMHeadModel.from_pretrained(DIR_STUDENT).eval()
    assert re_s.dtype == torch.float32
    for (n1, p1), (n2, p2) in zip(student32.state_dict().items(), re_s.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    dmax = max((p - q).abs().max().item() for p, q in zip(student32.parameters(), model_a.parameters()))
    print(f"  student = A + 0.05*randn (seed {IKD_STUDENT_SEED}); max|student - A| {dmax:.4f}")

    B, T, V = 2, 8, model_a.config.vocab_size
    g = gen(IKD_BATCH_SEED)
    ids = torch.randint(0, V, (B, T), generator=g)
    targets = torch.randint(0, V, (B, T), generator=g)
    alpha, tau, w_h, w_a = IKD["alpha"], IKD["temperature"], IKD["w_h"], IKD["w_a"]

    teacher = copy.deepcopy(model_a).double().eval()
    teacher.set_attn_implementation("eager")
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(student32).double()
    student.set_attn_implementation("eager")
    student.train()  # dropouts are 0 anyway
    named = list(student.named_parameters())
    assert not any(n.startswith("lm_head") for n, _ in named)

    def grads(weights):
        student.zero_grad(set_to_none=True)
        t = intermediate_kd_terms(student, teacher, ids, targets, alpha, tau)
        loss = sum(weights[k] * t[k] for k in weights)
        loss.backward()
        # A parameter the loss does not reach (ln_f for the intermediate terms) has no grad: 0.
        return t, loss, {grads_name(n): p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                         for n, p in named}

    terms, loss, g_all = grads({"kd": 1.0, "ce": 1.0 - alpha, "hidden": w_h, "attention": w_a})
    _, _, g_hidden = grads({"hidden": w_h})
    _, _, g_att = grads({"attention": w_a})
    rows = sorted(set(ids.reshape(-1).tolist()))
    tensors = {k: v.to(torch.float32).contiguous() for k, v in g_all.items()}
    for prefix, gd in (("hidden.", g_hidden), ("attention.", g_att)):
        for k, v in gd.items():
            if k == "grad.wte.weight":
                other = v.clone()
                other[rows] = 0
                assert (other == 0).all(), prefix + "wte gradient outside the ids' rows"
                tensors[prefix + "grad.wte.rows"] = v[rows].to(torch.float32).contiguous()
            else:
                tensors[prefix + k] = v.to(torch.float32).contiguous()
    # The terms are separable: the full gradient minus the two intermediate ones is the head's.
    _, _, g_head = grads({"kd": 1.0, "ce": 1.0 - alpha})
    for k in g_all:
        assert torch.allclose(g_all[k], g_head[k] + g_hidden[k] + g_att[k], rtol=1e-10, atol=1e-14), k
    st_path = os.path.join(DIR_REF, "intermediate_kd.safetensors")
    save_file(tensors, st_path)

    values = {k: v.item() for k, v in terms.items()}
    dump_json(os.path.join(DIR_REF, "intermediate_kd.json"), {
        "B": B, "T": T, "vocab_size": V,
        "student_seed": IKD_STUDENT_SEED, "batch_seed": IKD_BATCH_SEED,
        "input_ids": ids.reshape(-1).tolist(),
        "targets": targets.reshape(-1).tolist(),
        "alpha": alpha, "temperature": tau, "w_h": w_h, "w_a": w_a,
        "layer_map": list(range(student.config.n_layer)),
        "kd": values["kd"], "ce": values["ce"], "hidden": values["hidden"], "attention": values["attention"],
        "loss": loss.item(),
        "wte_rows": rows,
        "loss_formula": "kd + (1 - alpha) * ce + w_h * hidden + w_a * attention (kd includes alpha * tau^2)",
    })
    print("  terms:", {k: round(v, 9) for k, v in values.items()}, f" loss {loss.item():.12f}")
    for name, gd in (("all", g_all), ("hidden", g_hidden), ("attention", g_att), ("head", g_head)):
        norm = torch.sqrt(sum((v ** 2).sum() for v in gd.values())).item()
        print(f"  |grad {name}| = {norm:.6e}")
    for p in (os.path.join(DIR_STUDENT, "config.json"), os.path.join(DIR_STUDENT, "model.safetensors"),
              st_path, os.path.join(DIR_REF, "intermediate_kd.json")):
        sz = os.path.getsize(p)
        print(f"  {os.path.relpath(p, ROOT):60s} {sz:>10,d} B")
        assert sz < MAX_FILE_BYTES, p


# --------------------------------------------------------------------------
# sanity checks
# --------------------------------------------------------------------------
def sanity(model_a, base_f16, step_input_ids, step_logits64):
    ids = step_input_ids
    with torch.no_grad():
        ref = model_a(ids).logits
        re_a = GPT2LMHeadModel.from_pretrained(DIR_A).eval()
        assert re_a.lm_head.weight.data_ptr() == re_a.transformer.wte.weight.data_ptr()
        got = re_a(ids).logits
        assert torch.equal(ref, got), (ref - got).abs().max()
        print(f"  reload tiny-gpt2: logits identical; f32 vs f64 max|diff| "
              f"{(got.double() - step_logits64).abs().max().item():.3e}")
        # eager vs sdpa (float64)
        m64 = copy.deepcopy(model_a).double()
        sd = m64(ids).logits
        m64.set_attn_implementation("eager")
        ea = m64(ids).logits
        print(f"  f64 sdpa vs eager max|diff| {(sd - ea).abs().max().item():.3e}")

        re_b = GPT2Model.from_pretrained(DIR_B).eval()
        assert re_b.dtype == torch.float16, re_b.dtype
        for (n1, p1), (n2, p2) in zip(base_f16.state_dict().items(), re_b.state_dict().items()):
            assert n1 == n2 and torch.equal(p1, p2), n1
        hb = re_b.float()(ids).last_hidden_state
        ha = model_a.transformer(ids).last_hidden_state
        print(f"  reload tiny-gpt2-f16-base: weights identical; hidden f16-weights vs f32 "
              f"max|diff| {(hb - ha).abs().max().item():.3e}")
        sda = {k[len('transformer.'):]: v for k, v in model_a.state_dict().items() if k.startswith("transformer.")}
        for k, v in re_b.state_dict().items():
            assert torch.equal(v, sda[k].half()), k

    print("safetensors contents:")
    for d in (DIR_A, DIR_B):
        print_st(os.path.join(d, "model.safetensors"))
    for name in ("dtypes.safetensors",):
        print_st(os.path.join(DIR_REF, name))
    keys = st_keys(os.path.join(DIR_REF, "gpt2_step.safetensors"))
    print(f"  Tests/Fixtures/reference/gpt2_step.safetensors: {len(keys)} tensors")
    for k, dt, shape in keys:
        print(f"    {k:40s} {dt:5s} {shape}")

    print("files:")
    # gpt2_step.safetensors is the one known exception: "logits" (3.2 MB) plus
    # "grad.wte.weight" (50257*16*4 = 3.2 MB) cannot fit in 5 MB without
    # changing the file format the Swift tests read.
    allowed_big = set()
    too_big = []
    for d in (DIR_A, DIR_B, DIR_STUDENT, DIR_REF):
        for fn in sorted(os.listdir(d)):
            p = os.path.join(d, fn)
            sz = os.path.getsize(p)
            print(f"  {os.path.relpath(p, ROOT):60s} {sz:>10,d} B")
            if sz >= MAX_FILE_BYTES:
                if p in allowed_big:
                    print(f"    WARNING: {fn} is over 5 MB (logits + tied wte gradient, see above)")
                else:
                    too_big.append(p)
    assert not too_big, too_big


def main():
    ap = argparse.ArgumentParser(description="Write the reference fixtures (see the module docstring).")
    ap.add_argument("--only", choices=["intermediate", "tokenizer-json"],
                    help="write only this fixture (H), from the committed tiny-gpt2, leaving the others untouched")
    args = ap.parse_args()
    versions = {"python": sys.version.split()[0], "torch": torch.__version__,
                "transformers": transformers.__version__, "numpy": np.__version__,
                "safetensors": safetensors.__version__}
    print("versions:", versions)
    os.makedirs(DIR_REF, exist_ok=True)

    if args.only == "tokenizer-json":
        print("E2: tokenizer.json")
        write_tokenizer_json()
        print("OK")
        return

    if args.only == "intermediate":
        with open(os.path.join(DIR_REF, "versions.json"), encoding="utf-8") as f:
            committed = json.load(f)
        if committed != versions:
            print("  NOTE: versions differ from the committed versions.json:", committed)
        model_a = GPT2LMHeadModel.from_pretrained(DIR_A).eval()
        assert model_a.lm_head.weight is model_a.transformer.wte.weight
        rebuilt = build_model_a()
        same = all(torch.equal(p, q) for p, q in zip(model_a.state_dict().values(), rebuilt.state_dict().values()))
        print(f"  committed tiny-gpt2 == build_model_a(): {same}")
        print("H: intermediate-layer distillation (float64)")
        write_intermediate(model_a)
        print("OK")
        return

    print("A/B: tiny models")
    model_a = build_model_a()
    base_f16 = write_a_b(model_a)
    print("C: dtypes")
    write_dtypes()
    print("D: gpt2 step + AdamW (float64)")
    step_ids, step_logits64 = write_step(model_a)
    print("E: tokenizer")
    tok = write_tokenizer()
    print("E2: tokenizer.json")
    write_tokenizer_json()
    print("F: eval (float64)")
    write_eval(model_a, tok)
    print("G: generate")
    write_generate(model_a, tok)
    print("H: intermediate-layer distillation (float64)")
    write_intermediate(model_a)
    dump_json(os.path.join(DIR_REF, "versions.json"), versions)
    print("sanity checks")
    sanity(model_a, base_f16, step_ids, step_logits64)
    print("OK")


if __name__ == "__main__":
    main()
