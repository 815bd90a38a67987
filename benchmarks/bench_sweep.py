"""How much the feature cache saves when sweeping the frost line.

Runs the default sweep (the last k groups for k = 1..5, then LP-FT) of the demo network on both
demo tasks, each setting trained with the cache and without it one after the other (so a busy
patch of the machine hits both), and repeats that. Prints the wall-time and CPU-time ratios of
every repeat and their medians, overall and over the settings that read cached features, and
checks that the validation accuracies are identical.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--repeats 3] [--epochs 8]``
"""

from __future__ import annotations

import argparse
import statistics

import frostline as fl
from frostline.demo import tasks
from frostline.demo._run import deterministic, model_factory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    wall, cpu, cached_only = [], [], []
    with deterministic():
        for repeat in range(args.repeats):
            for task in tasks():
                result = fl.sweep(model_factory(task), task.train, task.val, epochs=args.epochs,
                                  compare_uncached=True)
                same = all(a.val_accuracy == b.val_accuracy
                           for a, b in zip(result.rows, result.baseline.rows))
                wall.append(result.speedup)
                cpu.append(result.cpu_speedup)
                cached_only.append(result.cached_speedup)
                per_setting = ", ".join(
                    f"{a.label}: {b.epoch_seconds / a.epoch_seconds:.2f}x"
                    for a, b in zip(result.rows, result.baseline.rows))
                print(f"repeat {repeat} {task.name:10s} cached {result.seconds:6.2f} s, uncached "
                      f"{result.baseline.seconds:6.2f} s: wall {result.speedup:.2f}x, CPU "
                      f"{result.cpu_speedup:.2f}x, cached settings {result.cached_speedup:.2f}x; "
                      f"accuracies identical: {same}")
                print(f"    per-epoch uncached/cached: {per_setting}")
    print(f"median over {len(wall)} sweeps: wall {statistics.median(wall):.2f}x, CPU "
          f"{statistics.median(cpu):.2f}x, settings that read cached features "
          f"{statistics.median(cached_only):.2f}x")


if __name__ == "__main__":
    main()
