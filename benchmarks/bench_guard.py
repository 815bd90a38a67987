"""What ``fl.guard`` costs next to one training step, and how much memory a snapshot keeps.

Part 1 (time): a ViT-B/16 (``vit_base_patch16_224``, random weights) locked to its top 4 groups
trains with AdamW on a batch of 2 images at 224x224. Interleaved, median over repeats:

* one training step (forward + backward + optimizer step),
* ``fl.snapshot(model, optimizer=optimizer)`` (fingerprints every parameter, frozen and
  trainable, and checks the optimizer's param groups),
* ``snapshot.check()``,
* a copy-based guard for comparison: cloning the frozen parameters, then ``torch.equal`` on each.

The guard's overhead is reported as (snapshot + check) / step.

Part 2 (memory): bytes a snapshot keeps, on the device and in Python (``tracemalloc``), for
ViT-S and ViT-B (different parameter counts, same tensor count) and a deeper ViT-B (more
tensors): bytes per tensor must stay flat whatever the parameter count.

Run: ``.venv/bin/python benchmarks/bench_guard.py`` (``--quick`` for a smoke run,
``--time-only`` to skip part 2; on a GPU ``--device cuda --batch 32 --repeats 20``).
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import timm
import torch
from torch import nn

import frostline as fl


def timed(fn, device: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds of this process (all threads) for one call of ``fn``."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - start, time.process_time() - cpu


def copy_guard(model: nn.Module) -> None:
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    params = dict(model.named_parameters())
    moved = [n for n, t in frozen.items() if not torch.equal(params[n], t)]
    assert not moved


def part_time(repeats: int, batch: int, size: int, device: str) -> None:
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, img_size=size,
                              num_classes=10).to(device)
    fl.lock(model, unlocked_groups=4)
    optimizer = torch.optim.AdamW(fl.param_groups(model, lr=1e-4, weight_decay=0.05))
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    holder = {}
    cases = {
        "training step": step,
        "fl.snapshot": lambda: holder.__setitem__("snap", fl.snapshot(model,
                                                                      optimizer=optimizer)),
        "snapshot.check": lambda: holder["snap"].check(),
        "copy-based guard": lambda: copy_guard(model),
    }
    step()
    holder["snap"] = fl.snapshot(model, optimizer=optimizer)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, device))
    median = {name: statistics.median(t for t, _ in ts) for name, ts in times.items()}
    cpu = {name: statistics.median(c for _, c in ts) for name, ts in times.items()}
    params = sum(p.numel() for p in model.parameters())
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    print(f"vit_base_patch16_224 at {size}x{size}, batch {batch} on {device}: "
          f"{params / 1e6:.1f}M parameters ({frozen / 1e6:.1f}M frozen), "
          f"{len(list(model.parameters()))} tensors, {torch.get_num_threads()} threads, "
          f"{repeats} repeats (median)")
    print("| operation | median s | ratio to one training step | CPU s | CPU-time ratio |")
    print("|---|---:|---:|---:|---:|")
    median["fl.guard (snapshot + check)"] = median["fl.snapshot"] + median["snapshot.check"]
    cpu["fl.guard (snapshot + check)"] = cpu["fl.snapshot"] + cpu["snapshot.check"]
    for name, value in median.items():
        print(f"| {name} | {value:.4f} | {value / median['training step']:.3f} | "
              f"{cpu[name]:.4f} | {cpu[name] / cpu['training step']:.3f} |")


def snapshot_bytes(model: nn.Module) -> tuple[int, int, int]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    snap = fl.snapshot(model)
    python = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tensors = sum(len(names) for names, _ in snap.prints.values())
    return tensors, snap.nbytes, python


def part_memory(quick: bool) -> None:
    configs = [("vit_small (depth 12)", "vit_small_patch16_224", 12),
               ("vit_base (depth 12)", "vit_base_patch16_224", 12)]
    if not quick:
        configs.append(("vit_base (depth 24)", "vit_base_patch16_224", 24))
    print("| model | parameters | tensors | device bytes/tensor | Python bytes/tensor | "
          "snapshot / parameter bytes |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, name, depth in configs:
        model = timm.create_model(name, pretrained=False, depth=depth, num_classes=10)
        fl.lock(model, unlocked_groups=2)
        tensors, device, python = snapshot_bytes(model)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        print(f"| {label} | {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M | {tensors} "
              f"| {device / tensors:.1f} | {python / tensors:.1f} | "
              f"{(device + python) / params:.2e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small images")
    parser.add_argument("--device", default="cpu", help="where the model lives (cpu, cuda)")
    parser.add_argument("--batch", type=int, default=2, help="images per training step")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per operation")
    parser.add_argument("--time-only", action="store_true", help="skip the memory part")
    args = parser.parse_args()
    if args.quick:
        part_time(repeats=2, batch=1, size=64, device=args.device)
    else:
        part_time(repeats=args.repeats, batch=args.batch, size=224, device=args.device)
    if not args.time_only:
        print()
        part_memory(args.quick)


if __name__ == "__main__":
    main()
