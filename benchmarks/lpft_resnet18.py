"""LP-FT next to full fine-tuning on a randomly initialised timm resnet18, 1,000 digits.

LP-FT trains the head alone for half the fine-tuning epochs (rounded up), then every group for
the full number of epochs, so a short budget still fine-tunes for all of it.

Run: ``PYTHONPATH=src .venv/bin/python -u benchmarks/lpft_resnet18.py``
"""

import time

import numpy as np
import timm
import torch
from sklearn.datasets import load_digits

import frostline as fl
from frostline.demo._run import deterministic
from frostline.torch._sweep import Setting

d = load_digits()
x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
y = torch.from_numpy(d.target.astype(np.int64))
g = torch.Generator().manual_seed(0)
order = torch.randperm(len(y), generator=g)
x, y = x[order], y[order]
train, val = (x[:1000], y[:1000]), (x[1000:], y[1000:])


def make():
    return timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)


n = len(fl.groups(make()))
settings = [Setting.lock(n), Setting.lp_ft(n)]
with deterministic():
    for epochs in (3, 4):
        t = time.perf_counter()
        r = fl.sweep(make, train, val, settings, epochs=epochs)
        for row in r.rows:
            print(f"epochs={epochs} {row.label}: {100 * row.val_accuracy:.1f}% "
                  f"({row.epochs} epochs run, {row.steps} steps)")
        print(f"  {time.perf_counter() - t:.1f} s")
