"""Learning curves of ``fl.choose``'s candidates, to compare successive-halving schedules.

For each task of ``eval_choose.py``, every candidate ``fl.choose`` considers is trained the way
``fl.choose`` trains it (the feature cache on, the same seed and budget) and measured on the
screening subset after every sixteenth of its fine-tuning budget (LP-FT after its whole probe),
and on the whole validation set at the end. Each point records the training and evaluation
seconds spent to reach it. A schedule (``simulate``) then replays what successive halving would
keep and prune, and what it would cost, without training again: a run resumed at a rung is the
same run (the sweep's tests check it), so the replay is exact in accuracy; its cost adds the
measured segments. Writes ``results/curves/<task>.json``.

Run: ``PYTHONPATH=src .venv/bin/python -u benchmarks/halving_curves.py --tasks a,b [--epochs 8]``
Replay: ``PYTHONPATH=src .venv/bin/python benchmarks/halving_curves.py --replay [--eta 4]
[--first-rung 0.0625]`` prints, per task, the setting a schedule keeps (as a
share of the best finished setting) and its cost against the full uncached sweep of
``results/<task>.json``; ``--family`` replays eta 2, 3 and 4 from first rungs of 1 and 2
sixteenths, keeping ties within 0, 0.5 and 1 standard errors, and picks one leaving each task
out in turn (the cheapest schedule on average that keeps 98% of the best on every other task).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import frostline as fl
from frostline.core.resolve import resolve
from frostline.demo._run import deterministic
from frostline.torch._sweep._cache import FeatureCache
from frostline.torch._sweep._choose import ETA, FIRST_RUNG, TIES, candidates
from frostline.torch._sweep._data import epochs_for, objective, source
from frostline.torch._sweep._halving import accuracy_margin, rung_fractions, survivors
from frostline.torch._sweep._run import _autocast, frozen_prefixes, recorded_layout
from frostline.torch._sweep._settings import LearningRates, Setting
from frostline.torch._sweep._train import Context, Run

POINTS = 16


def curves(make, train, val, settings, *, epochs, min_steps, lr, body_lr, batch_size=32,
           seed=0, screening=512):
    train_src, val_src = source(train, "training"), source(val, "validation")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = make()
    resolved = resolve(reference)
    reference, view, groups = resolved.model, resolved.view, resolved.groups
    budget = epochs_for(train_src, epochs, min_steps, seed, batch_size)
    layout = recorded_layout(reference, groups, view, train_src, None)
    wanted = frozen_prefixes(reference, groups, view, settings, None)
    start = time.perf_counter()
    features = FeatureCache(layout, reference, {"train": train_src, "val": val_src}, None,
                            2048.0, _autocast(None, False))
    features.prepare({b for b in wanted if 0 < b < len(groups)})
    cache_seconds = time.perf_counter() - start
    ctx = Context(make, groups, None, layout, features, train_src, val_src,
                  objective(None, None), budget, batch_size, seed, None, screen=screening)
    out = {}
    for setting in settings:
        run = Run(ctx, setting, LearningRates(lr, lr if body_lr is None else body_lr))
        probe = run.batches_until(run.total_epochs - ctx.epochs)
        tuning = run.batches_until(run.total_epochs) - probe
        points = []
        for k in range(1, POINTS + 1):
            target = probe + max(1, math.ceil(tuning * k / POINTS))
            before = run.seconds
            run.advance_to(target)
            trained = run.seconds - before
            before = run.seconds
            screen = run.evaluate(screening=True)
            points.append({"fraction": k / POINTS, "batches": run.batches,
                           "train_seconds": trained, "eval_seconds": run.seconds - before,
                           "screen": screen})
        before = run.seconds
        final = run.evaluate()
        out[setting.label] = {"points": points, "final": final,
                              "final_eval_seconds": run.seconds - before,
                              "cached_groups": run.cached_groups}
        print(f"  {setting.label:16} final {final:.3f}  {run.seconds:.1f} s", flush=True)
        run.release()
    return {"cache_seconds": cache_seconds, "budget_epochs": budget,
            "screening": min(screening, val_src.n), "candidates": out}


def replay(record, eta, first_rung, ties=TIES):
    """``(label, final accuracy, seconds)`` of what successive halving would choose."""
    margin = accuracy_margin(record["screening"], ties)
    labels = list(record["candidates"])
    curve = [record["candidates"][label] for label in labels]
    fractions = rung_fractions(len(labels), eta, first_rung)
    seconds, alive, reached = record["cache_seconds"], list(range(len(labels))), {}
    for rung, fraction in enumerate(fractions):
        point = max(0, math.ceil(fraction * POINTS) - 1)  # the recorded point at or after it
        last = rung == len(fractions) - 1
        for i in alive:
            points = curve[i]["points"]
            seconds += sum(p["train_seconds"] for p in points[reached.get(i, 0):point + 1])
            reached[i] = point + 1
            seconds += curve[i]["final_eval_seconds"] if last else points[point]["eval_seconds"]
        if last:
            break
        score = {i: curve[i]["points"][point]["screen"] for i in alive}
        ranked = sorted(alive, key=lambda i: score[i], reverse=True)
        keep = survivors(len(alive), eta)
        last = score[ranked[keep - 1]]
        alive = sorted(i for i in alive if score[i] >= last - margin(last)) if ties else \
            sorted(ranked[:keep])  # as fl.sweep: ties=0 keeps the count alone
    best = max(alive, key=lambda i: curve[i]["final"])
    return labels[best], curve[best]["final"], seconds


def print_replay(folder: Path, eta: int, first_rung: float, ties: float) -> None:
    print(f"eta {eta}, first rung {first_rung:g} of the budget, ties within {ties:g} standard "
          "errors kept")
    print("| task | kept | share of best | seconds / full uncached sweep |")
    print("| --- | --- | ---: | ---: |")
    shares, costs = [], []
    for path in sorted((folder / "curves").glob("*.json")):
        record = json.loads(path.read_text())
        full = json.loads((folder / path.name).read_text())
        label, final, seconds = replay(record, eta, first_rung, ties)
        best = max(c["final"] for c in record["candidates"].values())
        shares.append(final / best)
        costs.append(seconds / full["full_seconds"])
        print(f"| {path.stem} | {label} | {100 * shares[-1]:.1f}% | {costs[-1]:.2f} |")
    print(f"worst share {100 * min(shares):.1f}%, highest cost {max(costs):.2f}")


def print_family(folder: Path) -> None:
    records = {path.stem: (json.loads(path.read_text()),
                           json.loads((folder / path.name).read_text())["full_seconds"])
               for path in sorted((folder / "curves").glob("*.json"))}
    schedules = [(eta, k / POINTS, ties) for eta in (2, 3, 4) for k in (1, 2)
                 for ties in (0.0, 0.5, 1.0)]
    measured = {}
    for schedule in schedules:
        for name, (record, full_seconds) in records.items():
            _, final, seconds = replay(record, *schedule)
            best = max(c["final"] for c in record["candidates"].values())
            measured[schedule, name] = (final / best, seconds / full_seconds)
    print("| eta | first rung | ties | worst share | mean cost | highest cost |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for schedule in schedules:
        shares, costs = zip(*(measured[schedule, name] for name in records))
        print(f"| {_name(schedule)} | {100 * min(shares):.1f}% | {sum(costs) / len(costs):.2f} "
              f"| {max(costs):.2f} |")
    print("\n| task left out | schedule chosen on the others | its share | its cost |")
    print("| --- | --- | ---: | ---: |")
    for held in records:
        others = [name for name in records if name != held]
        fit = [s for s in schedules if all(measured[s, name][0] >= 0.98 for name in others)]
        pick = min(fit, key=lambda s: sum(measured[s, name][1] for name in others))
        share, cost = measured[pick, held]
        eta, first, ties = pick
        print(f"| {held} | eta {eta}, first rung {round(first * POINTS)}/{POINTS}, ties {ties:g} "
              f"| {100 * share:.1f}% | {cost:.2f} |")


def _name(schedule: tuple[int, float, float]) -> str:
    eta, first, ties = schedule
    return f"{eta} | {round(first * POINTS)}/{POINTS} | {ties:g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks")
    parser.add_argument("--replay", action="store_true")
    parser.add_argument("--family", action="store_true")
    parser.add_argument("--eta", type=int, default=ETA)
    parser.add_argument("--first-rung", type=float, default=FIRST_RUNG)
    parser.add_argument("--ties", type=float, default=TIES)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--min-steps", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curves")
    args = parser.parse_args()
    if args.family:
        print_family(args.out.parent)
        return
    if args.replay:
        print_replay(args.out.parent, args.eta, args.first_rung, args.ties)
        return
    import eval_choose

    names = args.tasks.split(",")
    found = eval_choose._task_list()
    found.update(eval_choose._text_task_list(names))
    for name in names:
        _, shift, new_head, train, val, make, rates = found[name]
        n = len(train[1]) if isinstance(train, tuple) else len(train.dataset)
        print(name, flush=True)
        with deterministic():
            prior = fl.recommend(make(), n, shift, new_head=new_head)
            settings = candidates(prior.n_groups, Setting.from_recommendation(prior), new_head)
            record = curves(make, train, val, settings, epochs=args.epochs,
                            min_steps=args.min_steps, lr=rates.get("lr", 3e-3),
                            body_lr=rates.get("body_lr"))
        record.update(task=name, epochs=args.epochs, min_steps=args.min_steps)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
