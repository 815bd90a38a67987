"""``fl.choose``: the frost line by measurement, starting from the rules' prior.

The rules of thumb (``fl.recommend``) give a prior from the data set's size and the kind of
shift. ``choose`` then measures: every frost line (the last k groups, for every k), LP-FT,
surgical fine-tuning of the first groups, and the prior, on the user's data. It screens them
cheaply (the frozen prefix's features are cached; successive halving trains every setting a
sixteenth of its budget, keeps the best quarter, trains those to a quarter of it and keeps the
best of them, ranking on a fixed subset of the validation set and keeping too what that subset
cannot tell apart from the last one kept) and trains the finalists to the end; the prior
competes like any other setting. The recommendation is the best finalist, with reasons that
cite what was measured (where the prior stood included).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...core.groups import Grouping
from ...core.recommend import (
    FULL,
    LINEAR_PROBE,
    LP_FT,
    PARTIAL,
    PROBE,
    SURGICAL,
    Phase,
    Recommendation,
    recommend_for_groups,
)
from ...core.resolve import resolve
from ._data import Source, epochs_for, source
from ._result import SweepResult, SweepRow
from ._run import sweep
from ._settings import Setting, with_setting
from ._train import resolve_plan

ETA = 4  # successive halving keeps the best quarter of the settings at every rung
FIRST_RUNG = 1 / 16  # ... the first after a sixteenth of their budget
TIES = 0.5  # ... and those within half a standard error of the last one kept


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` measured and recommends.

    Attributes:
        recommendation: the measured recommendation (the type ``fl.recommend`` returns); for
            LP-FT its ``schedule`` holds both phases with their epochs and learning rates.
        prior: what the rules of thumb recommended before measuring.
        result: the :class:`SweepResult` of everything measured (pruned settings included).
        seconds: wall time of the whole choice.
    """

    recommendation: Recommendation
    prior: Recommendation
    result: SweepResult
    seconds: float

    def __str__(self) -> str:
        return str(self.recommendation)


def candidates(n_groups: int, prior: Setting, new_head: bool) -> list[Setting]:
    """The prior first, then the last k groups for every k, LP-FT over all groups, and
    surgical fine-tuning of the first 1 and 2 groups (with the head when it is new).

    Example:
        >>> [s.label for s in candidates(4, Setting.lock(2), new_head=True)]
        ['2', '1', '3', '4', 'LP-FT 4', 'first 1 + head', 'first 2 + head']
    """
    found = [prior]
    for setting in [Setting.lock(k) for k in range(1, n_groups + 1)] + [Setting.lp_ft(n_groups)]:
        found = with_setting(found, setting)
    for k in (1, 2):
        if k + int(new_head) < n_groups:
            found = with_setting(found, Setting.surgical(k, head=new_head))
    return found


def choose(make_model: Callable[[], nn.Module], train: Any, val: Any, *, shift: str = "none",
           new_head: bool = True, epochs: int = 8, seed: int = 0, batch_size: int = 32,
           lr: float = 3e-3, body_lr: float | None = None,
           lr_grid: list[tuple[float, float]] | None = None, min_steps: int = 100,
           halving: int | None = ETA, first_rung: float | None = FIRST_RUNG,
           ties: float = TIES, screening: int = 512, cache: bool = True,
           device: str | torch.device | None = None,
           amp: bool = False, loss: Callable | None = None, metric: Callable | None = None,
           deterministic: bool | None = None, progress: bool | Callable[[str], None] = False,
           grouping: Grouping | None = None) -> Choice:
    """Choose which groups train by measuring them on your data.

    Args:
        make_model: returns the pretrained model with its head (see ``fl.sweep``).
        train: training data: tensors, a DataLoader or batches (see ``fl.sweep``).
        val: validation data, the same way.
        shift: the kind of domain shift, for the prior ("none", "low", "high", "input",
            "output"; see ``fl.recommend``).
        new_head: the head is freshly initialised (surgical settings then train it too).
        epochs: training epochs per setting for the finalists (fewer for the pruned).
        seed: seeds every setting the same way.
        batch_size, lr, body_lr, lr_grid, cache, device, amp, loss, metric, deterministic,
            progress: as for ``fl.sweep``.
        min_steps: every setting takes at least this many optimizer steps (epochs are raised
            on small data sets), so that a linear probe is not judged on 10 steps.
        halving: successive halving's ``eta``: the best ``1/eta`` of the settings go on at
            every rung (None: train every setting to the end).
        first_rung: the share of its budget every setting trains before the first pruning
            (rungs then grow by ``eta``; see ``fl.sweep``). With ``min_steps`` at 100 that is
            at least 7 optimizer steps.
        ties: settings whose screening accuracy is within this many standard errors of the
            last one kept are kept too (see ``fl.sweep``): on a small validation set, halving
            prunes less rather than guess.
        screening: between rungs, settings are ranked on a fixed subset of this many
            validation examples (the finalists are measured on all of them).
        grouping: how to build the groups (:class:`~frostline.Grouping`); the recommended
            plan carries it.

    Returns:
        A :class:`Choice`.

    Example:
        >>> import torch, frostline as fl
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> make = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                                    torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> choice = fl.choose(make, (x, y), (x, y), epochs=2, min_steps=0)
        >>> choice.recommendation.plan == choice.result.best.setting.plan
        True
    """
    start = time.perf_counter()
    train_src = source(train, "training", deterministic)
    val_src = source(val, "validation", deterministic)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = make_model()
    resolved = resolve(reference, grouping=grouping)
    reference, groups = resolved.model, resolved.groups
    n = len(groups)
    prior = recommend_for_groups(n, train_src.n, shift, new_head=new_head)
    prior_setting = Setting.from_recommendation(prior)
    settings = candidates(n, prior_setting, new_head)
    result = sweep(make_model, train_src, val_src, settings, epochs=epochs,
                   batch_size=batch_size, lr=lr, body_lr=body_lr, lr_grid=lr_grid,
                   min_steps=min_steps, halving=halving if len(settings) > 1 else None,
                   first_rung=first_rung, ties=ties, screening=screening,
                   seed=seed, cache=cache, device=device, amp=amp, loss=loss, metric=metric,
                   deterministic=deterministic, progress=progress, grouping=grouping)
    best = result.best
    trainable = _trainable_groups(best.setting, reference, grouping)
    plan = best.setting.plan if grouping is None else \
        best.setting.plan.with_grouping(grouping.without_input())
    measured = Recommendation(
        plan=plan, unlocked_groups=len(trainable), trainable_groups=trainable,
        n_groups=n, strategy=_strategy(best.setting, trainable, n),
        reasons=tuple(_reasons(result, best, prior, prior_setting, train_src.n, val_src.n,
                               min(screening, val_src.n), ties if metric is None else 0.0)
                      + _few_steps(result, train_src, epochs, min_steps, seed, batch_size,
                                   first_rung)),
        schedule=_schedule(best),
    )
    return Choice(measured, prior, result, time.perf_counter() - start)


def _trainable_groups(setting: Setting, model: nn.Module, grouping: Grouping | None
                      ) -> tuple[int, ...]:
    resolved = resolve_plan(model, setting.plan, grouping)
    mask = resolved.mask.as_dict()
    return tuple(i for i, group in enumerate(resolved.groups)
                 if any(mask.get(name, False) for name in group.leaf_names))


def _strategy(setting: Setting, trainable: tuple[int, ...], n: int) -> str:
    if setting.is_lp_ft:
        return LP_FT
    if len(trainable) == n:
        return FULL
    if trainable and trainable[0] == 0:
        return SURGICAL
    return LINEAR_PROBE if trainable == (n - 1,) else PARTIAL


def _schedule(best: SweepRow) -> tuple[Phase, ...]:
    phases = best.setting.phases(_fine_tune_epochs(best))
    epochs = [count for _, count in phases]
    names = ["linear probe", "fine-tune"] if best.setting.is_lp_ft else ["train"]
    return tuple(Phase(name, PROBE if name == "linear probe" else plan, count, best.lr.head,
                       best.lr.body)
                 for name, (plan, _), count in zip(names, phases, epochs))


def _fine_tune_epochs(best: SweepRow) -> int:
    """The fine-tuning phase's epochs of a finished row (LP-FT rows add their probe)."""
    if not best.setting.is_lp_ft:
        return int(best.epochs)
    for epochs in range(1, int(best.epochs) + 1):
        if sum(count for _, count in best.setting.phases(epochs)) == best.epochs:
            return epochs
    return int(best.epochs)


def _reasons(result: SweepResult, best: SweepRow, prior: Recommendation, prior_setting: Setting,
             n_train: int, n_val: int, screened: int, ties: float = 0.0) -> list[str]:
    finished = sorted((r for r in result.rows if r.finished), key=lambda r: -r.val_accuracy)
    reasons = [f"measured on {n_train:,} training and {n_val:,} validation examples: "
               f"{len(result.rows)} settings, the finalists trained {_fine_tune_epochs(best)} "
               f"epochs" + (" after a linear probe" if best.setting.is_lp_ft else "") + " "
               f"(lr {best.lr})"]
    runner_up = next((r for r in finished if r.setting != best.setting), None)
    reasons.append(f"{best.label!r} reached {_pct(best.val_accuracy)} on validation, the best"
                   + (f"; next {runner_up.label!r} {_pct(runner_up.val_accuracy)}"
                      if runner_up else ""))
    prior_row = result.row(prior_setting)
    if prior_setting == best.setting:
        reasons.append(f"the rules of thumb agree ({prior.strategy}, {prior_setting.label!r})")
    elif prior_row.finished:
        reasons.append(f"the rules of thumb said {prior.strategy} ({prior_setting.label!r}), "
                       f"trained to the end beside the finalists: {_pct(prior_row.val_accuracy)}, "
                       f"{_ratio(prior_row, best)} of the best")
    elif prior_row.diverged:
        reasons.append(f"the rules of thumb said {prior.strategy} ({prior_setting.label!r}): its "
                       "loss diverged")
    else:
        reasons.append(f"the rules of thumb said {prior.strategy} ({prior_setting.label!r}): "
                       f"stopped after {prior_row.pruned_after:g} epochs at "
                       f"{_pct(prior_row.val_accuracy)}")
    if result.pruned:
        rungs = sorted({p.after_epochs for p in result.pruned})
        reasons.append(f"successive halving stopped {len(result.pruned)} of {len(result.rows)} "
                       f"settings early (after {', '.join(f'{r:g}' for r in rungs)} epochs"
                       + (f", ranked on {screened:,} of the {n_val:,} validation examples"
                          if screened < n_val else "")
                       + (f"; settings within {ties:g} standard errors of the last one kept "
                          "went on" if ties else "") + ")")
    diverged = [r.label for r in result.rows if r.diverged]
    if diverged:
        reasons.append(f"diverged (never chosen): {', '.join(diverged)}")
    cached = sum(1 for r in result.rows if r.cached_groups)
    if cached:
        reasons.append(f"{cached} settings trained on cached features of their frozen groups "
                       f"(built once in {result.cache_seconds:.2f} s)")
    return reasons


FEW_STEPS = 5  # a first rung of fewer batches ranks settings on little more than their start


def _few_steps(result: SweepResult, train: Source, epochs: int, min_steps: int, seed: int,
               batch_size: int, first_rung: float | None) -> list[str]:
    """A warning when successive halving's first rung trained only a handful of batches."""
    if not result.pruned or first_rung is None:
        return []
    budget = len(train.epoch(0, seed, batch_size)) * epochs_for(train, epochs, min_steps, seed,
                                                                 batch_size)
    first = max(1, math.ceil(first_rung * budget))
    if first >= FEW_STEPS:
        return []
    return [f"the first rung trained only {first} batch{'es' if first > 1 else ''} of "
            f"{budget}: rankings that early are noisy; raise min_steps (or epochs, or "
            "first_rung)"]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%" if math.isfinite(value) else "nan"


def _ratio(row: SweepRow, best: SweepRow) -> str:
    return f"{100 * row.val_accuracy / best.val_accuracy:.1f}%" if best.val_accuracy else "-"
