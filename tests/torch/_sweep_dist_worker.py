"""One rank of a 2-process gloo sweep on the CPU, started by test_sweep_distributed.py.

Usage: python _sweep_dist_worker.py OUT_DIR (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set).
Each rank runs the same full sweep and the same successive-halving sweep and writes the rows it
returned to OUT_DIR/rank{rank}.json; the test compares them with one process's result.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

import frostline as fl
from frostline.torch._sweep import Setting

SETTINGS = [Setting.lock(k) for k in (1, 2, 3)] + [Setting.lp_ft(3), Setting.surgical(1)]


BUILT = []


def make() -> nn.Module:
    BUILT.append(1)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.Dropout(0.2),
                         nn.ReLU(), nn.Linear(16, 2))


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def rows(result) -> list:
    return [[r.label, r.val_accuracy, r.epochs, r.steps, r.cached_groups, r.pruned_after]
            for r in result.rows]


def sweeps() -> dict:
    x, y = data()
    BUILT.clear()
    full = fl.sweep(make, (x, y), (x, y), SETTINGS, epochs=4, batch_size=16, lr=3e-2)
    built = len(BUILT)
    halved = fl.sweep(make, (x, y), (x, y), SETTINGS, epochs=4, batch_size=16, lr=3e-2,
                      halving=2)
    return {"full": rows(full), "halved": rows(halved),
            "pruned": [[p.label, p.after_epochs, p.rung] for p in halved.pruned],
            "models_built_by_the_full_sweep": built}


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo")
    try:
        result = sweeps()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
