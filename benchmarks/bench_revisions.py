"""Is ``fl.lock`` (and a training step after it) as fast as on an earlier revision?

Extracts ``--base`` (a git revision) into a temporary folder with ``git archive`` and times the
same code on it and on the working tree, in alternating subprocesses (so a slow patch of a shared
machine hits both), median over rounds:

* ``fl.lock(model, 2)`` on an 80-layer Llama on the meta device, and on a synthetic meta-device
  model with 10,002 tensors;
* a training step (forward, backward, AdamW) of a 12-block timm ViT after ``fl.lock(model, 2)``.

Run: ``.venv/bin/python benchmarks/bench_revisions.py --base 6f5a118 [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs in a subprocess whose PYTHONPATH selects the revision; prints one JSON line.
PROBE = r"""
import json, statistics, time, torch
from torch import nn
import frostline as fl
torch.set_num_threads(1)

def timed(fn, repeats):
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter(); fn(); samples.append(time.perf_counter() - start)
    return statistics.median(samples)

from transformers import LlamaConfig, LlamaForCausalLM
config = LlamaConfig(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
                     num_attention_heads=64, num_key_value_heads=8, vocab_size=128256)
with torch.device("meta"):
    llama = LlamaForCausalLM(config)
    blocks = [nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
              for _ in range(10_002 // 6)]
    synthetic = nn.Sequential(nn.Linear(8, 8), nn.Sequential(*blocks), nn.Linear(8, 2))
out = {"lock llama-80 (ms)": timed(lambda: fl.lock(llama, 2), 5) * 1e3,
       "lock synthetic 10k (ms)": timed(lambda: fl.lock(synthetic, 2), 3) * 1e3}

import timm
torch.manual_seed(0)
vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=16,
                        depth=12, embed_dim=192, num_heads=3, num_classes=10)
fl.lock(vit, 2)
opt = torch.optim.AdamW([p for p in vit.parameters() if p.requires_grad], lr=1e-4,
                        weight_decay=0.05)
x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(vit(x), y).backward()
    opt.step()
out["ViT step after lock(2) (ms)"] = timed(step, 5) * 1e3
print(json.dumps(out))
"""


def extract(revision: str, into: Path) -> Path:
    archive = into / "base.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive),
                    revision, "src"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def probe(src: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        base_src = extract(args.base, Path(folder))
        runs: dict[str, list[dict[str, float]]] = {"base": [], "now": []}
        for _ in range(args.rounds):
            runs["base"].append(probe(base_src))
            runs["now"].append(probe(ROOT / "src"))
    print(f"{args.rounds} alternating rounds, medians; base = {args.base}, now = working tree")
    print(f"{'measure':<30} {'base':>10} {'now':>10} {'now/base':>9}")
    for key in runs["base"][0]:
        base = statistics.median(r[key] for r in runs["base"])
        now = statistics.median(r[key] for r in runs["now"])
        print(f"{key:<30} {base:10.1f} {now:10.1f} {now / base:9.2f}")


if __name__ == "__main__":
    main()
