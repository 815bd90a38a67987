"""How fast is a step after ``fl.lock``, and how fast is ``fl.lock`` itself.

Part 1 times one training step (forward + backward + AdamW step) of a 12-block timm ViT under
four set-ups, interleaved, median over repeats:

* full fine-tuning (every parameter trains),
* ``fl.lock(model, unlocked_groups=2)``,
* a hand-written ``requires_grad`` loop freezing exactly the same tensors,
* gradient-zeroing hooks on the same tensors (they still get gradients, which are then zeroed).

Part 2 times ``fl.lock`` on an 80-layer Llama built on the meta device, and on synthetic
meta-device models with 1k, 10k and 100k tensors (time per tensor should stay flat).

Run: ``.venv/bin/python benchmarks/bench_lock.py`` (``--quick`` for a smoke run, ``--threads N``
to fix the number of torch CPU threads, ``--lock-only`` for part 2 alone).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import timm
import torch
from torch import nn

import frostline as fl


def make_vit() -> nn.Module:
    # vit_small widths would take minutes per step set on 2 CPU cores; depth 12 is what matters.
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                             patch_size=16, depth=12, embed_dim=192, num_heads=3,
                             num_classes=10)


def setups(base: nn.Module) -> dict[str, tuple[nn.Module, torch.optim.Optimizer]]:
    locked = copy.deepcopy(base)
    fl.lock(locked, unlocked_groups=2)
    unlocked = {n for n, p in locked.named_parameters() if p.requires_grad}

    full = copy.deepcopy(base)

    loop = copy.deepcopy(base)
    for name, param in loop.named_parameters():
        param.requires_grad = name in unlocked

    hooks = copy.deepcopy(base)
    for name, param in hooks.named_parameters():
        if name not in unlocked:
            param.register_hook(torch.zeros_like)

    def optimizer(model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                 weight_decay=0.05)

    return {name: (model, optimizer(model)) for name, model in
            [("full fine-tuning", full), ("fl.lock(2)", locked), ("requires_grad loop", loop),
             ("zeroing hooks", hooks)]}


def step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
         y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def bench_steps(repeats: int, steps: int, batch: int) -> None:
    torch.manual_seed(0)
    base = make_vit()
    runs = setups(base)
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 10, (batch,))
    for model, optimizer in runs.values():  # warm-up
        model.train()
        step(model, optimizer, x, y)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (model, optimizer) in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                step(model, optimizer, x, y)
            times[name].append((time.perf_counter() - start) / steps)
    median = {name: statistics.median(t) for name, t in times.items()}
    trainable = sum(p.numel() for p in runs["fl.lock(2)"][0].parameters() if p.requires_grad)
    total = sum(p.numel() for p in base.parameters())
    print(f"ViT depth 12, width 192, 64x64 images, batch {batch}, torch threads "
          f"{torch.get_num_threads()}; trainable after lock(2): {trainable:,} / {total:,}")
    print(f"{repeats} interleaved repeats x {steps} steps; median seconds per step:")
    for name, value in median.items():
        print(f"  {name:<20} {value * 1e3:8.1f} ms")
    lock, loop = median["fl.lock(2)"], median["requires_grad loop"]
    print(f"  lock(2) / requires_grad loop      = {lock / loop:.3f}x   (target <= 1.05x)")
    print(f"  full fine-tuning / lock(2)        = {median['full fine-tuning'] / lock:.2f}x   "
          "(target >= 2.5x)")
    print(f"  zeroing hooks / lock(2)           = {median['zeroing hooks'] / lock:.2f}x")


def timed(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of the following ``repeats`` calls) in seconds."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return first, statistics.median(samples)


def bench_llama(repeats: int) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
                         num_attention_heads=64, num_key_value_heads=8, vocab_size=128256)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    tensors = sum(1 for _ in model.parameters())
    first, median = timed(lambda: fl.lock(model, unlocked_groups=2), repeats)
    print(f"Llama, 80 layers on the meta device ({tensors} tensors, "
          f"{len(fl.groups(model))} groups): fl.lock first call {first * 1e3:.1f} ms, "
          f"then median {median * 1e3:.1f} ms (target < 50 ms)")


def synthetic(tensors: int) -> nn.Module:
    """Blocks of Linear + LayerNorm + Linear (6 tensors each) on the meta device."""
    with torch.device("meta"):
        blocks = [nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 8))
                  for _ in range(tensors // 6)]
        return nn.Sequential(nn.Linear(8, 8), nn.Sequential(*blocks), nn.Linear(8, 2))


def bench_scaling(sizes: list[int], repeats: int) -> None:
    print("fl.lock(unlocked_groups=2) on synthetic meta-device models:")
    for size in sizes:
        model = synthetic(size)
        tensors = sum(1 for _ in model.parameters())
        _, median = timed(lambda: fl.lock(model, unlocked_groups=2), repeats)
        print(f"  {tensors:>7,} tensors: {median * 1e3:9.1f} ms  "
              f"({median / tensors * 1e6:.1f} us per tensor)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--lock-only", action="store_true",
                        help="part 2 only: the cost of fl.lock itself, no training steps")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        bench_steps(repeats=2, steps=1, batch=4)
        bench_llama(repeats=2)
        bench_scaling([1_000, 10_000], repeats=1)
    else:
        if not args.lock_only:
            bench_steps(repeats=7, steps=3, batch=16)
        bench_llama(repeats=9)
        bench_scaling([1_000, 10_000, 100_000], repeats=3)


if __name__ == "__main__":
    main()
