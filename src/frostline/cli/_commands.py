"""``frostline inspect``, ``frostline plan`` and ``frostline recommend``."""

from __future__ import annotations

import argparse
from typing import Any

from .._report import Explanation, Summary
from ..core.groups import Grouping
from ..core.plan import FREEZE, UNFREEZE, Plan
from ..core.recommend import SHIFTS, recommend
from ..core.resolve import resolve
from ..core.selectors import Selector, path
from ._models import SPEC_HELP, add_model_arg_option, model_from_args
from ._output import echo, emit_json


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=f"the model: {SPEC_HELP}")
    add_model_arg_option(parser)
    parser.add_argument("--coarse", action="store_true",
                        help="coarser groups where the model's own grouping offers them (timm)")
    parser.add_argument("--tower", metavar="image|text",
                        help="the groups of one tower of an OpenCLIP model (or of the submodule "
                        "at this module path); locks leave the rest untouched")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def _grouping(args: argparse.Namespace) -> Grouping | None:
    # Only options given on the command line: a loaded plan's own grouping stays in force.
    if not args.coarse and args.tower is None:
        return None
    return Grouping(coarse=True if args.coarse else None, tower=args.tower)


def _scope(model: Any, args: argparse.Namespace) -> Selector | None:
    """The part of the model the groups describe (a ``--tower``), or None for all of it."""
    if args.tower is None:
        return None
    found = resolve(model, grouping=_grouping(args)).groups
    return path(*found.scope) if found.scope else None


def _lock(model: Any, unlocked_groups: int, args: argparse.Namespace) -> Plan:
    """``lock(K)`` as a plan, scoped to the tower's part of the model with ``--tower``."""
    return Plan.lock(unlocked_groups, scope=_scope(model, args))


# --- inspect ------------------------------------------------------------------------------------

def add_inspect(commands: Any) -> None:
    parser = commands.add_parser(
        "inspect", help="show the model's layer groups",
        description="Show the model's layer groups (input first): the module paths each holds, "
        "parameter counts, and what trains now or under --unlocked-groups K.")
    _model_arguments(parser)
    parser.add_argument("--unlocked-groups", type=int, metavar="K",
                        help="show what lock(K) would freeze (the model is not changed)")
    parser.set_defaults(run=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    plan = _lock(model, args.unlocked_groups, args) if args.unlocked_groups is not None else None
    report = Summary.of(resolve(model, plan, _grouping(args)))
    if args.json:
        emit_json({"model": args.model, "plan": plan.to_dict() if plan else None,
                   **report.to_dict()})
    else:
        if plan is not None:
            echo(f"under {plan}:")
        echo(str(report))
    return 0


# --- plan ---------------------------------------------------------------------------------------

class _RuleAction(argparse.Action):
    """Collect --freeze / --unfreeze in command-line order (order matters: last match wins)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        rules = list(getattr(namespace, "rules", None) or [])
        rules.append((FREEZE if option_string == "--freeze" else UNFREEZE, values))
        namespace.rules = rules


def add_plan(commands: Any) -> None:
    parser = commands.add_parser(
        "plan", help="build or check a plan and show what it trains",
        description="Build a plan (lock K groups, then --freeze/--unfreeze rules in the order "
        "given; the last matching rule wins) or check a saved one, and show per parameter "
        "whether it trains and which rule decided it.")
    _model_arguments(parser)
    parser.add_argument("--unlocked-groups", type=int, metavar="K",
                        help="start from lock(K): freeze all but the last K groups")
    parser.add_argument("--freeze", action=_RuleAction, dest="rules", metavar="SEL",
                        help="freeze what SEL selects (repeatable)")
    parser.add_argument("--unfreeze", action=_RuleAction, dest="rules", metavar="SEL",
                        help="make what SEL selects trainable (repeatable)")
    parser.add_argument("--freeze-bn-stats", action="store_true",
                        help="fix the BatchNorm statistics of fully frozen BatchNorms")
    parser.add_argument("--train-bn", action="store_true",
                        help="keep normalisation layers' affine parameters trainable")
    parser.add_argument("--save", metavar="FILE", help="write the plan (.yaml/.yml or .json)")
    parser.add_argument("--check", metavar="FILE",
                        help="load a saved plan and validate it against the model instead")
    parser.add_argument("--buffers", action="store_true", help="list buffers too")
    parser.set_defaults(run=run_plan, rules=None)


def _plan_from_args(model: Any, args: argparse.Namespace) -> Plan:
    from . import UsageError

    built = args.unlocked_groups is not None or args.rules or args.freeze_bn_stats or args.train_bn
    if args.check:
        if built:
            raise UsageError("--check FILE validates a saved plan; do not combine it with "
                             "--unlocked-groups, --freeze, --unfreeze or BatchNorm flags.")
        return Plan.load(args.check)
    if not built:
        raise UsageError("nothing to plan: pass --unlocked-groups K, --freeze SEL or "
                         "--unfreeze SEL (or --check FILE to validate a saved plan).")
    plan = _lock(model, args.unlocked_groups, args) if args.unlocked_groups is not None else Plan()
    for action, selector in args.rules or []:
        plan = plan.freeze(selector) if action == FREEZE else plan.unfreeze(selector)
    plan = plan.with_grouping(_grouping(args))
    return plan.with_bn(freeze_bn_stats=args.freeze_bn_stats or None,
                        train_bn=args.train_bn or None)


def run_plan(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    plan = _plan_from_args(model, args)
    # Resolving validates: every rule matches, groups exist, tied weights agree (else raises).
    resolved = resolve(model, plan, _grouping(args))
    explanation = Explanation.of(resolved, buffers=args.buffers)
    report = Summary.of(resolved)
    if args.save:
        plan.save(args.save)
    if args.json:
        emit_json({"model": args.model, **explanation.to_dict(), "plan": plan.to_dict(),
                   "plan_text": str(plan), "checked": args.check, "saved": args.save,
                   "trainable": report.trainable, "total": report.total})
        return 0
    if args.check:
        echo(f"{args.check}: valid for {args.model} (every rule matches, groups exist, "
             "no tied-weight conflicts)")
    echo("rules (the last matching rule decides; no match: trainable):")
    for index, rule in enumerate(plan.rules):
        echo(f"  {index}: {rule}")
    flags = [flag for flag in ("freeze_bn_stats", "train_bn") if getattr(plan, flag)]
    if flags:
        echo(f"  with {', '.join(flags)}")
    echo(str(explanation))
    frozen = sum(1 for row in explanation.rows if not row.trainable and row.kind == "param")
    echo(f"{frozen} parameter tensors frozen; {report.total_line}")
    if args.save:
        echo(f"saved to {args.save}")
    return 0


# --- recommend ----------------------------------------------------------------------------------

def add_recommend(commands: Any) -> None:
    parser = commands.add_parser(
        "recommend", help="recommend a frost line from dataset size and domain shift",
        description="Recommend which layer groups train, from the number of training examples "
        "and the kind of domain shift (the thresholds are in the README).")
    _model_arguments(parser)
    parser.add_argument("--n-train", type=int, required=True, metavar="N",
                        help="labelled training examples")
    parser.add_argument("--shift", choices=SHIFTS, default="none",
                        help="domain shift from the pretraining data (default: none)")
    parser.add_argument("--same-head", action="store_true",
                        help="the head is not new (same labels); surgical plans leave it frozen")
    parser.add_argument("--literature", action="store_true",
                        help="the literature's rules alone, not the rules calibrated on the "
                             "evaluation suite")
    parser.add_argument("--save", metavar="FILE", help="write the recommended plan")
    parser.set_defaults(run=run_recommend)


def run_recommend(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    rec = recommend(model, args.n_train, args.shift, new_head=not args.same_head,
                    grouping=_grouping(args), calibrated=not args.literature)
    report = Summary.of(resolve(model, rec.plan, _grouping(args)))
    if args.save:
        rec.plan.save(args.save)
    if args.json:
        emit_json({"model": args.model, **rec.to_dict(), "summary": report.to_dict()})
        return 0
    echo(str(rec))
    echo(str(report))
    if args.save:
        echo(f"saved to {args.save}")
    return 0
