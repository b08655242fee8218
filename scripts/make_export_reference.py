#!/usr/bin/env python3
"""Export fixture: transformers loads a directory written by `squeeze export --dense`.

Run by hand (never in CI), after `swift build`:
    /work/venv/bin/python scripts/make_export_reference.py

1. `squeeze export --model Tests/Fixtures/tiny-compressed --dense --out TMP` (the compressed
   fixture holds every layer form: sparse, 2:4, Kronecker, Kronecker with low-rank factors,
   low rank + sparse, low rank, low-rank embedding; made by Tests/Fixtures/tiny-compressed.yaml).
2. `GPT2LMHeadModel.from_pretrained(TMP)` in float64, on fixed ids.
3. Writes Tests/Fixtures/reference/export.json with the ids, per-position log-sum-exp of the
   logits (covers all 50257 entries) and the argmax, and export_logits.safetensors with the
   first 4096 logits of each position (F32).
The Swift test exports the same fixture itself and compares its own logits of the exported
directory with these values.
"""
import json, os, subprocess, sys, tempfile
import torch
from safetensors.torch import save_file
from transformers import GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQUEEZE = os.path.join(ROOT, ".build", "debug", "squeeze")
SRC = os.path.join(ROOT, "Tests", "Fixtures", "tiny-compressed")
REF = os.path.join(ROOT, "Tests", "Fixtures", "reference")
IDS = [[464, 3290, 286, 257, 1049, 318, 1115, 13], [50256, 40, 716, 407, 2048, 11, 644, 198]]

def main():
    if not os.path.exists(SQUEEZE):
        sys.exit("build first: swift build")
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([SQUEEZE, "export", "--model", SRC, "--dense", "--out", out], check=True)
        model = GPT2LMHeadModel.from_pretrained(out).double().eval()
        with torch.no_grad():
            logits = model(torch.tensor(IDS)).logits
    lse = torch.logsumexp(logits, dim=-1)
    json.dump({"ids": IDS, "logsumexp": lse.tolist(), "argmax": logits.argmax(-1).tolist(),
               "note": "transformers logits of `squeeze export --dense` of Tests/Fixtures/tiny-compressed"},
              open(os.path.join(REF, "export.json"), "w"), indent=1)
    save_file({"logits": logits[:, :, :4096].to(torch.float32).contiguous()}, os.path.join(REF, "export_logits.safetensors"))
    print("logsumexp", lse.tolist())

if __name__ == "__main__":
    main()
