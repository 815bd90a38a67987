"""Choosing the frost line: a recommended plan from dataset size and domain shift.

The rules of thumb, in order (``n`` = labelled training examples, ``G`` = layer groups):

Dataset size (the default :class:`Thresholds`):
    * ``n < 300`` (tiny): unlock the last group only (the head) — a linear probe.
    * ``300 <= n < 1,000`` (small): unlock the last 2 groups.
    * ``1,000 <= n < 10,000`` (medium): unlock the top half, ``ceil(G / 2)`` groups.
    * ``n >= 10,000`` (large): unlock all ``G`` groups (full fine-tuning).

Domain shift (how far the target data is from the pretraining data):
    * ``"none"``: the size rule alone.
    * ``"low"``: the size rule; when more than the head trains, LP-FT (train the head alone
      first, then fine-tune), which keeps pretrained features from being distorted by a random
      head and is more robust out of distribution (Kumar et al., 2022).
    * ``"high"``: one size class more than the size rule (tiny -> small -> medium -> large),
      since distant domains need more layers to adapt; LP-FT as for ``"low"``.
    * ``"input"``: input-level shift (corruptions, inverted or re-coloured images, a new
      sensor): surgical fine-tuning (Lee et al., 2022) tunes the FIRST groups, as many as the
      size rule gives, plus the head when it is new (``new_head``).
    * ``"output"``: output-level shift (new labels over the same kind of inputs): the last
      groups, as the size rule gives but at most ``ceil(G / 2)`` unless the dataset is large.

Whenever a group stays frozen, the plan also fixes the BatchNorm statistics of the frozen
groups (``freeze_bn_stats``), as OpenCLIP's ``lock`` can: small target batches would
otherwise overwrite statistics estimated on the large source data.

These are the literature's rules (``calibrated=False``). By default they are recalibrated where
the evaluation suite measured them (``benchmarks/eval_choose.py`` then
``benchmarks/calibrate_rules.py``, shipped as ``frostline/data/rule_evidence.json``, read by
:mod:`frostline.core.evidence`): in a cell of the table (size class / shift) that the suite
covers, the recommendation follows the rule form that did best there in the worst case, and its
reasons give the measured shares of the best and a confidence. Cells the suite does not cover
keep the literature's rule and say that it is unmeasured. On the suite, for example, tiny data
with new labels did better training the top half than with a linear probe, and tiny data with
an input-level shift did better training the last 2 groups than the first group alone.

This module holds the rules on a number of groups and imports no framework;
:func:`recommend` counts a model's groups through its backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from .._errors import PlanError, closest
from .evidence import LITERATURE, rule_evidence
from .groups import Grouping, Groups
from .plan import Plan

SHIFTS = ("none", "low", "high", "input", "output")
SIZE_CLASSES = ("tiny", "small", "medium", "large")

LINEAR_PROBE = "linear-probe"
PARTIAL = "partial-fine-tune"
FULL = "full-fine-tune"
LP_FT = "lp-ft"
SURGICAL = "surgical"


@dataclass(frozen=True)
class Thresholds:
    """Dataset-size boundaries (number of labelled training examples).

    Attributes:
        small: at least this many examples is "small" (below: "tiny", head only).
        medium: at least this many is "medium" (top half of the groups).
        large: at least this many is "large" (every group).
    """

    small: int = 300
    medium: int = 1_000
    large: int = 10_000

    def __post_init__(self) -> None:
        if not 0 <= self.small <= self.medium <= self.large:
            raise PlanError(
                f"thresholds must satisfy 0 <= small <= medium <= large, got small={self.small}, "
                f"medium={self.medium}, large={self.large}."
            )

    def size_class(self, n_train: int) -> str:
        """The size class of ``n_train`` examples: tiny, small, medium or large."""
        if n_train >= self.large:
            return "large"
        if n_train >= self.medium:
            return "medium"
        if n_train >= self.small:
            return "small"
        return "tiny"


@dataclass(frozen=True)
class Phase:
    """One phase of a training schedule: what trains, and (when measured) for how long and at
    which Adam learning rates.

    Attributes:
        name: "linear probe", "fine-tune", ...
        plan: apply it at the start of the phase (``fl.apply(model, phase.plan)``).
        epochs: the phase's length, when known (None: your budget).
        lr: learning rate of the head (the last group), when known.
        body_lr: learning rate of the other groups, when known.
    """

    name: str
    plan: Plan
    epochs: int | None = None
    lr: float | None = None
    body_lr: float | None = None

    def __str__(self) -> str:
        extra = [f"{self.epochs} epochs"] if self.epochs is not None else []
        if self.lr is not None:
            extra.append(f"lr {self.lr:g}" + (f", body lr {self.body_lr:g}"
                                              if self.body_lr not in (None, self.lr) else ""))
        return f"{self.name}: {self.plan}" + (f" ({', '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "plan": self.plan.to_dict(), "epochs": self.epochs,
                "lr": self.lr, "body_lr": self.body_lr}


@dataclass(frozen=True)
class Recommendation:
    """A recommended plan and why.

    Attributes:
        plan: the plan to apply (``fl.apply(model, rec.plan)``); for LP-FT, the fine-tuning
            phase (run ``schedule`` to train the head alone first).
        unlocked_groups: how many groups train.
        trainable_groups: the indices of the groups that train, input first.
        n_groups: how many groups the model has.
        strategy: "linear-probe", "partial-fine-tune", "full-fine-tune", "lp-ft" or "surgical".
        reasons: the rules (or the measurements) that led here, in words.
        schedule: the phases to train in order: ``(plan,)`` as one phase, or for LP-FT the
            linear probe then the fine-tuning phase::

                for phase in rec.schedule:
                    fl.apply(model, phase.plan)
                    train(model, phase.epochs)
    """

    plan: Plan
    unlocked_groups: int
    trainable_groups: tuple[int, ...]
    n_groups: int
    strategy: str
    reasons: tuple[str, ...] = field(default=())
    schedule: tuple[Phase, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.schedule:
            object.__setattr__(self, "schedule", _schedule(self.strategy, self.plan))

    def __str__(self) -> str:
        lines = [f"recommended: {self.strategy}, {self.unlocked_groups} of {self.n_groups} groups "
                 f"trainable {list(self.trainable_groups)}", f"plan: {self.plan}"]
        if len(self.schedule) > 1 or self.schedule[0].epochs is not None:
            lines += [f"  phase {i}. {phase}" for i, phase in enumerate(self.schedule, 1)]
        lines += [f"- {reason}" for reason in self.reasons]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "unlocked_groups": self.unlocked_groups,
            "trainable_groups": list(self.trainable_groups),
            "n_groups": self.n_groups,
            "plan": self.plan.to_dict(),
            "reasons": list(self.reasons),
            "schedule": [phase.to_dict() for phase in self.schedule],
        }


PROBE = Plan.lock(1, freeze_bn_stats=True)


def _schedule(strategy: str, plan: Plan) -> tuple[Phase, ...]:
    if strategy == LP_FT:
        return (Phase("linear probe", PROBE), Phase("fine-tune", plan))
    return (Phase("train", plan),)


def recommend_for_groups(n_groups: int, n_train: int, domain_shift: str = "none", *,
                         new_head: bool = True, thresholds: Thresholds = Thresholds(),
                         calibrated: bool = True) -> Recommendation:
    """Recommend which of ``n_groups`` layer groups train, from data size and domain shift.

    The thresholds and the literature behind each rule are listed in this module's docstring.

    Args:
        n_groups: number of layer groups of the model (input first, head last).
        n_train: number of labelled training examples.
        domain_shift: "none", "low", "high", "input" or "output".
        new_head: the last group is a freshly initialised head (it must train). Only changes
            the ``"input"`` rule: with ``new_head=False`` surgical fine-tuning leaves it frozen.
        thresholds: dataset-size boundaries.
        calibrated: where the evaluation suite measured the cell (size class / shift, default
            thresholds), follow the rule it found best and cite it; False: the literature's
            rules alone.

    Returns:
        A :class:`Recommendation`.

    Raises:
        PlanError: ``n_train`` is negative or not an int, or ``domain_shift`` is unknown.
        GroupError: ``n_groups`` is below 1.

    Example:
        >>> rec = recommend_for_groups(5, n_train=500)
        >>> rec.unlocked_groups, rec.strategy, str(rec.plan)
        (2, 'partial-fine-tune', 'Plan(freeze **, unfreeze group:-2:; freeze_bn_stats, unlocked_groups=2)')
        >>> recommend_for_groups(5, 200, "input", new_head=False, calibrated=False).trainable_groups
        (0,)
    """
    _check(n_groups, n_train, domain_shift)
    literature = _literature(n_groups, n_train, domain_shift, new_head, thresholds)
    if not calibrated:
        return literature
    cell = f"{thresholds.size_class(n_train)}/{domain_shift}"
    found = rule_evidence().get(cell) if thresholds == Thresholds() else None
    if found is None:
        return replace(literature, reasons=(*literature.reasons, (
            f"no task of the evaluation suite falls in this cell ({cell}), so this rule is "
            "the literature's, unmeasured here: confidence unknown; fl.choose measures it on "
            "your data")))
    if found.form == LITERATURE:
        return replace(literature, reasons=(*literature.reasons, found.describe()))
    measured = from_form(found.form, n_groups, new_head)
    same = measured.plan == literature.plan and measured.strategy == literature.strategy
    reasons = [literature.reasons[0] if same else _size_reason(
        thresholds.size_class(n_train), n_train, thresholds, calibrated=True)]
    if same:
        reasons += list(literature.reasons[1:])
    reasons.append(found.describe())
    if measured.strategy != FULL and measured.unlocked_groups < n_groups:
        reasons.append("BatchNorm statistics of the frozen groups stay fixed (freeze_bn_stats)")
    return replace(measured, reasons=tuple(dict.fromkeys(reasons)))


def from_form(form: str, n_groups: int, new_head: bool = True) -> Recommendation:
    """The recommendation one rule form (:data:`~frostline.core.evidence.FORMS`) gives on
    ``n_groups`` groups, without reasons.

    Example:
        >>> from_form("top half", 5).trainable_groups
        (2, 3, 4)
        >>> from_form("first 1", 5, new_head=True).trainable_groups
        (0, 4)
    """
    if form.startswith("first "):
        return _surgical(n_groups, int(form.split()[1]), new_head, [])
    count = {"head": 1, "last 2": 2, "top half": math.ceil(n_groups / 2), "all": n_groups,
             "lp-ft all": n_groups}[form]
    count = min(count, n_groups)
    strategy = LP_FT if form == "lp-ft all" and n_groups > 1 else \
        LINEAR_PROBE if count == 1 and n_groups > 1 else FULL if count == n_groups else PARTIAL
    plan = Plan.lock(count, freeze_bn_stats=count < n_groups)
    return Recommendation(plan, count, tuple(range(n_groups - count, n_groups)), n_groups,
                          strategy)


def _literature(n_groups: int, n_train: int, domain_shift: str, new_head: bool,
                thresholds: Thresholds) -> Recommendation:
    """The rules of this module's docstring, as the literature gives them."""
    size = thresholds.size_class(n_train)
    reasons = [_size_reason(size, n_train, thresholds)]
    if domain_shift == "high" and size != "large":
        size = SIZE_CLASSES[SIZE_CLASSES.index(size) + 1]
        reasons.append(f"high domain shift: one size class more, treated as {size}: distant "
                       "domains need more layers to adapt")
    count = _count(size, n_groups)
    if domain_shift == "input":
        return _surgical(n_groups, count, new_head, reasons)
    if domain_shift == "output" and size != "large" and count > math.ceil(n_groups / 2):
        count = math.ceil(n_groups / 2)
        reasons.append(f"output-level shift: the lower features transfer, so at most the top "
                       f"half ({count} groups) trains")
    elif domain_shift == "output":
        reasons.append("output-level shift (new labels): tune the last groups (Lee et al., 2022)")
    strategy = _top_strategy(count, n_groups, domain_shift, reasons)
    plan = Plan.lock(count, freeze_bn_stats=count < n_groups)
    if count < n_groups:
        reasons.append("BatchNorm statistics of the frozen groups stay fixed (freeze_bn_stats)")
    return Recommendation(plan, count, tuple(range(n_groups - count, n_groups)), n_groups,
                          strategy, tuple(reasons))


def recommend(model: Any, n_train: int, domain_shift: str = "none", *, new_head: bool = True,
              thresholds: Thresholds = Thresholds(), grouping: Grouping | None = None,
              calibrated: bool = True) -> Recommendation:
    """Recommend a plan for ``model`` from dataset size and domain shift.

    Counts the model's layer groups with ``fl.resolve(model, grouping=grouping)`` (or takes a
    :class:`Groups` value as ``model``) and applies the rules listed in
    :func:`recommend_for_groups`.

    Args:
        model: a model any backend handles, or its :class:`Groups`.
        n_train: number of labelled training examples.
        domain_shift: "none", "low", "high", "input" or "output".
        new_head: the last group is a freshly initialised head.
        thresholds: dataset-size boundaries.
        grouping: how to build the groups (:class:`Grouping`); the recommended plan carries it,
            so ``fl.apply(model, rec.plan)`` counts the same groups.
        calibrated: follow the evaluation suite where it measured the cell (see
            :func:`recommend_for_groups`).

    Returns:
        A :class:`Recommendation`; apply it with ``fl.apply(model, rec.plan)``.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
        >>> rec = fl.recommend(net, n_train=50_000)
        >>> rec.unlocked_groups, rec.strategy
        (6, 'full-fine-tune')
    """
    if isinstance(model, Groups):
        found = model
    else:
        from .resolve import resolve

        found = resolve(model, grouping=grouping).groups
    rec = recommend_for_groups(len(found), n_train, domain_shift, new_head=new_head,
                               thresholds=thresholds, calibrated=calibrated)
    plan = rec.plan if grouping is None else rec.plan.with_grouping(grouping.without_input())
    if found.scope:
        # Groups of one part of the model (a tower): the plan decides that part only, as a
        # tower lock does, and leaves the rest as it is.
        from .selectors import path

        plan = plan.within(path(*found.scope))
    return replace(rec, plan=plan)


def _check(n_groups: int, n_train: int, domain_shift: str) -> None:
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        from .._errors import GroupError

        raise GroupError(f"a recommendation needs at least one layer group, got {n_groups!r}.")
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 0:
        raise PlanError(f"n_train must be a non-negative int (labelled training examples), "
                        f"got {n_train!r}.")
    if domain_shift not in SHIFTS:
        hint = closest(str(domain_shift), SHIFTS)
        raise PlanError(f"unknown domain_shift {domain_shift!r}: expected one of "
                        f"{', '.join(SHIFTS)}" + (f" (closest: {hint[0]!r})." if hint else "."))


def _count(size: str, n_groups: int) -> int:
    wanted = {"tiny": 1, "small": 2, "medium": math.ceil(n_groups / 2), "large": n_groups}[size]
    return min(wanted, n_groups)


def _size_reason(size: str, n_train: int, t: Thresholds, calibrated: bool = False) -> str:
    if calibrated:
        return f"{n_train:,} training examples is {size}"
    rule = {
        "tiny": f"below {t.small:,}, only the head trains (a linear probe)",
        "small": f"{t.small:,} to {t.medium - 1:,}, the last 2 groups train",
        "medium": f"{t.medium:,} to {t.large - 1:,}, the top half of the groups trains",
        "large": f"{t.large:,} or more, every group trains",
    }[size]
    return f"{n_train:,} training examples is {size}: {rule}"


def _top_strategy(count: int, n_groups: int, shift: str, reasons: list[str]) -> str:
    if count == 1 and n_groups > 1:
        return LINEAR_PROBE
    if shift in ("low", "high"):
        reasons.append("domain shift: train the head alone first, then the unlocked groups "
                       "(LP-FT, Kumar et al., 2022), so the random head does not distort the "
                       "pretrained features")
        return LP_FT
    return FULL if count == n_groups else PARTIAL


def _surgical(n_groups: int, count: int, new_head: bool,
              reasons: list[str]) -> Recommendation:
    first = min(count, n_groups)
    trainable = set(range(first))
    plan = Plan().freeze("**").unfreeze(f"group::{first}")
    reasons.append(f"input-level shift: surgical fine-tuning (Lee et al., 2022) tunes the first "
                   f"{first} group(s), where low-level features must adapt, not the last")
    if new_head and n_groups - 1 not in trainable:
        trainable.add(n_groups - 1)
        plan = plan.unfreeze("group:-1:")
        reasons.append("the head is new, so it trains too (new_head=True)")
    frozen = len(trainable) < n_groups
    plan = plan.with_bn(freeze_bn_stats=frozen)
    if frozen:
        reasons.append("BatchNorm statistics of the frozen groups stay fixed (freeze_bn_stats)")
    strategy = FULL if not frozen else SURGICAL
    return Recommendation(plan, len(trainable), tuple(sorted(trainable)), n_groups, strategy,
                          tuple(reasons))
