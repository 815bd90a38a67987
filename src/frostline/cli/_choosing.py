"""``frostline choose MODEL --data FILE.npz``: the frost line by measurement on your data."""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.table import Table

from .._report import render
from ._output import echo, emit_json


def add_choose(commands: Any) -> None:
    from ..core.recommend import SHIFTS
    from ._models import SPEC_HELP, add_model_arg_option
    from ._sweeping import _positive

    parser = commands.add_parser(
        "choose", help="choose which groups train by measuring them on your data",
        description="Start from the rules of thumb (dataset size, kind of shift), then measure "
        "every frost line, LP-FT and surgical fine-tuning of the first groups on your data: the "
        "frozen groups' features are cached and successive halving keeps the best quarter of "
        "the settings after a sixteenth of their budget, then the best of those after a "
        "quarter of it (and what the validation subset cannot tell apart from the last one "
        "kept); the finalists train the whole budget. Prints the measured recommendation, its "
        "reasons and every setting's numbers.")
    parser.add_argument("model", metavar="MODEL", help=f"the model: {SPEC_HELP}")
    add_model_arg_option(parser)
    parser.add_argument("--data", metavar="FILE.npz", required=True,
                        help="classification data: an .npz with x_train, y_train, x_val, y_val")
    parser.add_argument("--shift", choices=SHIFTS, default="none",
                        help="domain shift of your data, for the prior (default none)")
    parser.add_argument("--same-head", action="store_true",
                        help="the head is not new (same labels); surgical settings leave it "
                        "frozen")
    parser.add_argument("--epochs", type=_positive, default=8,
                        help="training epochs of the finalists (default 8)")
    parser.add_argument("--min-steps", type=int, default=100,
                        help="at least this many optimizer steps per setting (default 100)")
    parser.add_argument("--batch-size", type=_positive, default=32)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate of the head")
    parser.add_argument("--body-lr", type=float, help="Adam learning rate of the other groups "
                        "(default: --lr)")
    parser.add_argument("--no-halving", action="store_true",
                        help="train every setting to the end (slower)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", metavar="FILE", help="write the recommended plan")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.set_defaults(run=run_choose)


def run_choose(args: argparse.Namespace) -> int:
    from ..demo._run import deterministic
    from ..torch._sweep import choose
    from ..torch._sweep._choose import ETA
    from ._models import parse_model_args
    from ._own import own_task

    task, make = own_task(args.model, args.data, args.shift, args.seed,
                          model_args=parse_model_args(args.model_args))
    start = time.perf_counter()
    with deterministic():
        choice = choose(make, task.train, task.val, shift=args.shift,
                        new_head=not args.same_head, epochs=args.epochs, seed=args.seed,
                        batch_size=args.batch_size, lr=args.lr, body_lr=args.body_lr,
                        min_steps=args.min_steps, halving=None if args.no_halving else ETA,
                        progress=True)
    seconds = time.perf_counter() - start
    rec = choice.recommendation
    if args.save:
        rec.plan.save(args.save)
    if args.json:
        emit_json({"model": args.model, "data": args.data, "recommendation": rec.to_dict(),
                   "prior": choice.prior.to_dict(), "sweep": choice.result.to_dict(),
                   "seconds": seconds})
        return 0
    echo(f"frostline: choose the frost line of {args.model} on {args.data} "
         f"({len(task.train[1])} training / {len(task.val[1])} validation examples)")
    echo(str(rec))
    echo(render(choice_table(choice), width=160))
    for note in choice.result.notes:
        echo(note)
    if args.save:
        echo(f"saved the plan to {args.save}")
    echo(f"total {seconds:.1f} s")
    return 0


def choice_table(choice: Any) -> Table:
    """Every measured setting: metric, epochs, learning rates, cache use, and what it became."""
    from ..torch._sweep import Setting

    result = choice.result
    chosen = result.best.setting
    prior = Setting.from_recommendation(choice.prior)
    table = Table(title_justify="left")
    for column in ("setting", "groups", "val acc", "epochs", "lr", "cached groups", ""):
        table.add_column(column, justify="left" if column in ("setting", "lr", "") else "right")
    for row in sorted(result.rows, key=lambda r: (r.pruned_after is not None,
                                                  -(r.val_accuracy if r.finished else -1))):
        marks = [m for m, on in (("chosen", row.setting == chosen),
                                 ("rules' pick", row.setting == prior),
                                 (f"stopped after {row.pruned_after or 0:g} epochs",
                                  row.pruned_after is not None),
                                 ("diverged", row.diverged)) if on]
        table.add_row(row.label, str(row.unlocked_groups), f"{100 * row.val_accuracy:.2f}%",
                      f"{row.epochs:g}", str(row.lr), str(row.cached_groups or "-"),
                      ", ".join(marks))
    return table
