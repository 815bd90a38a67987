"""Evaluation of the rules and of ``fl.choose`` against the full sweep, on transfer tasks.

Six tasks of the demo family, built offline from scikit-learn's digits and the shipped network
(pretrained on digits 0-4): output-level shifts (new labels, digits 5-9) and input-level shifts
(noise, inversion, rotation of digits 0-4, same labels), from 50 to 300 training images. For
each task: the full sweep (every frost line, LP-FT over all groups, surgical first 1 and 2
groups, the rules' pick; uncached, every setting to the end), the rules' pick (``fl.recommend``)
and ``fl.choose`` (cached features, successive halving with its defaults), all with the same
epochs and seed.
Prints each pick as a share of the full sweep's best, and the cost of ``fl.choose`` against the
full uncached sweep (wall time and training epochs).

The text tasks (``text-packages-120``, ``text-packages-400``, ``text-typos-120``) are the real
all-MiniLM-L6-v2 on Python's own docstrings (``frostline.demo._text``; they need
``frostline[text]``), trained with Adam lr 3e-3 for the head and 1e-4 for the other groups.

Run: ``PYTHONPATH=src .venv/bin/python -u benchmarks/eval_choose.py [--tasks a,b] [--epochs 8]``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import frostline as fl
from frostline.demo import pretrained_digit_net, reset_head, source_data, tasks
from frostline.demo._run import demo_settings, deterministic
from frostline.demo._text import EVAL_NAMES, text_tasks
from frostline.torch._sweep import Setting


def _task_list():
    new, noisy = tasks()
    (_, _), (clean, labels) = source_data()
    g = torch.Generator().manual_seed(1)
    order = torch.randperm(len(labels), generator=g)
    clean, labels = clean[order], labels[order]

    def cut(name, shift, new_head, train, val, n):
        return name, shift, new_head, (train[0][:n], train[1][:n]), val, _digit_net(new_head), {}

    # Feature-level shift: new sub-populations under the source's labels (digits 5-9 join
    # held-out digits 0-4 as classes d mod 5, source head kept), passed to the rules as "high".
    images, digit = _all_digits()
    mixed = torch.randperm(len(digit), generator=torch.Generator().manual_seed(2))
    sub_x, sub_y = images[mixed], digit[mixed] % 5
    held = len(sub_y) - 1000  # validation: what the largest training set leaves

    def subpopulations(n):
        return cut(f"subpopulations-{n}", "high", False,
                   (sub_x[held:held + n], sub_y[held:held + n]), (sub_x[:held], sub_y[:held]), n)

    inverted = 1.0 - clean
    rotated = clean.rot90(1, dims=(2, 3))
    return {
        "new-digits-300": cut("new-digits-300", "output", True, new.train, new.val, 300),
        "new-digits-50": cut("new-digits-50", "output", True, new.train, new.val, 50),
        "noisy-200": cut("noisy-200", "input", False, noisy.train, noisy.val, 200),
        "noisy-60": cut("noisy-60", "input", False, noisy.train, noisy.val, 60),
        "inverted-150": cut("inverted-150", "input", False, (inverted[:150], labels[:150]),
                            (inverted[150:], labels[150:]), 150),
        "rotated-150": cut("rotated-150", "input", False, (rotated[:150], labels[:150]),
                           (rotated[150:], labels[150:]), 150),
        "subpopulations-100": subpopulations(100),
        "subpopulations-400": subpopulations(400),
        "subpopulations-1000": subpopulations(1000),
    }


def _digit_net(new_head):
    return lambda: reset_head(pretrained_digit_net(), 5) if new_head else pretrained_digit_net()


def _text_task_list(names):
    """The text tasks (``frostline.demo._text``, the real MiniLM) among ``names``."""
    wanted = [n for n in names if n in EVAL_NAMES]
    built = text_tasks([EVAL_NAMES[n] for n in wanted]) if wanted else []
    return {n: (n, t.domain_shift, t.new_head, t.train, t.val, t.make_model,
                {"lr": t.lr, "body_lr": t.body_lr}) for n, t in zip(wanted, built)}


def _all_digits():
    """The images of digits 5-9 and of the held-out digits 0-4 (never seen in pretraining)."""
    new = tasks()[0]
    (_, _), (clean, labels) = source_data()
    x = torch.cat([new.train[0], new.val[0], clean])
    y = torch.cat([new.train[1] + 5, new.val[1] + 5, labels])
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--min-steps", type=int, default=100,
                        help="fewest optimizer steps per setting, in both runs (fl.choose's "
                             "default)")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results",
                        help="folder for one JSON file per task (read by calibrate_rules.py)")
    args = parser.parse_args()
    found = _task_list()
    names = args.tasks.split(",") if args.tasks else [*found, *EVAL_NAMES]
    found.update(_text_task_list(names))
    print("| task | n | shift | full sweep best | rules' pick (share of best) | fl.choose "
          "(share of best) | choose / full uncached: wall | epochs |")
    print("| --- | ---: | --- | --- | --- | --- | ---: | ---: |")
    for name in names:
        _, shift, new_head, train, val, make, rates = found[name]
        n = len(train[1]) if isinstance(train, tuple) else len(train.dataset)
        with deterministic():
            rec = fl.recommend(make(), n, shift, new_head=new_head)
            rules = Setting.from_recommendation(rec)
            start = time.perf_counter()
            settings = demo_settings(rec.n_groups, rules, new_head)
            full = fl.sweep(make, train, val, settings, epochs=args.epochs,
                            min_steps=args.min_steps, cache=False, **rates)
            full_seconds = time.perf_counter() - start
            # The literature's rule, for calibrate_rules.py: measured apart when fl.choose
            # does not consider it, so that the full sweep's cost stays that of its candidates.
            literature = Setting.from_recommendation(
                fl.recommend(make(), n, shift, new_head=new_head, calibrated=False))
            extra = () if literature in settings else fl.sweep(
                make, train, val, [literature], epochs=args.epochs, min_steps=args.min_steps,
                cache=False, **rates).rows
            start = time.perf_counter()
            choice = fl.choose(make, train, val, shift=shift, new_head=new_head,
                               epochs=args.epochs, min_steps=args.min_steps, **rates)
            choose_seconds = time.perf_counter() - start
        best = full.best
        picked = choice.result.best

        def share(value: float) -> str:
            return f"{100 * value / best.val_accuracy:.1f}%"

        print(f"| {name} | {n} | {shift} | {best.label} {100 * best.val_accuracy:.1f}% "
              f"| {rules.label} {share(full.row(rules).val_accuracy)} "
              f"| {picked.label} {share(picked.val_accuracy)} "
              f"| {choose_seconds:.1f} s / {full_seconds:.1f} s = "
              f"{choose_seconds / full_seconds:.2f} "
              f"| {sum(r.epochs for r in choice.result.rows):.3g} / "
              f"{sum(r.epochs for r in full.rows):g} |", flush=True)
        write_result(args.json / f"{name}.json", name=name,
                     kind="vision" if isinstance(train, tuple) else "text", n=n,
                     shift=shift, new_head=new_head, n_groups=rec.n_groups, epochs=args.epochs,
                     min_steps=args.min_steps, full=full, rules=rules, choice=choice,
                     full_seconds=full_seconds, choose_seconds=choose_seconds, extra=extra)


def write_result(path: Path, *, name: str, kind: str, n: int, shift: str, new_head: bool,
                 n_groups: int, epochs: int, min_steps: int, full, rules, choice,
                 full_seconds: float, choose_seconds: float, extra=()) -> None:
    """One task's measurements: every setting of the full sweep and what each pick got."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "task": name, "kind": kind, "n_train": n, "shift": shift, "new_head": new_head,
        "n_groups": n_groups, "epochs": epochs, "min_steps": min_steps,
        "full_sweep": {row.label: row.val_accuracy for row in (*full.rows, *extra)},
        "rules_pick": rules.label, "choose_pick": choice.result.best.label,
        "choose_accuracy": choice.result.best.val_accuracy,
        "full_seconds": full_seconds, "choose_seconds": choose_seconds,
        "full_epochs": sum(r.epochs for r in full.rows),
        "choose_epochs": sum(r.epochs for r in choice.result.rows),
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
