"""``fl.sweep``: train every setting on the same budget and measure it."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..._errors import PlanError
from ...core.groups import Grouping, Groups
from ...core.leaves import TreeView
from ...core.resolve import resolve
from ._cache import RECORD, FeatureCache, Layout
from ._data import Source, batch_size_of, epochs_for, objective, source, take, to_device
from ._halving import Outcome, accuracy_margin, halve, halving_share, run_all
from ._progress import progress_bar
from ._result import SweepResult, SweepRow
from ._scale import gather, mine
from ._settings import LearningRates, Setting, default_settings
from ._train import Context, Run, RunSummary, frozen_prefix, resolve_plan


def sweep(make_model: Callable[[], nn.Module], train: Any, val: Any,
          settings: Sequence[Setting] | None = None, *, epochs: int = 5, batch_size: int = 32,
          lr: float = 3e-3, body_lr: float | None = None,
          lr_grid: Sequence[tuple[float, float]] | None = None, min_steps: int = 0,
          halving: int | None = None, first_rung: float | None = None,
          ties: float = 0.0, keep: Sequence[Setting] = (), screening: int = 512,
          seed: int = 0, cache: bool = True,
          compare_uncached: bool = False, deterministic: bool | None = None,
          device: str | torch.device | None = None, amp: bool = False,
          loss: Callable | None = None, metric: Callable | None = None,
          cache_memory_mb: float = 2048.0, progress: bool | Callable[[str], None] = False,
          grouping: Grouping | None = None) -> SweepResult:
    """Train every setting on the same budget and measure the metric, time and memory.

    Args:
        make_model: returns the pretrained model, with a fresh head if the task needs one.
            Called once per setting (and learning rate) under ``torch.manual_seed(seed)``; it
            must return the same pretrained weights and buffers every time (checked for the
            cached groups).
        train: ``(inputs, labels)`` tensors, a ``DataLoader``, or a re-iterable of
            ``(inputs, labels)`` batches; inputs are a tensor, a tuple (``model(*inputs)``) or a
            dict (``model(**inputs)``). An output with ``.logits`` is read as logits.
        val: the same for validation.
        settings: what to compare; default: ``Setting.lock(k)`` for every ``k`` from 1 (the
            head alone: a linear probe) to all groups, then LP-FT over all groups.
        epochs: training epochs per setting (LP-FT adds its probe phase before them).
        batch_size: training batch size for tensors (a loader keeps its own).
        lr: Adam learning rate of the head (the last group).
        body_lr: Adam learning rate of the other groups (default: ``lr``).
        lr_grid: ``(head, body)`` pairs to try for every setting instead of ``lr``/``body_lr``;
            each row reports its best pair (chosen on the validation metric).
        min_steps: raise the epochs so that every setting takes at least this many optimizer
            steps (a fair budget on small data sets).
        halving: successive halving with this ``eta`` (2: the better half goes on at every
            rung; rungs are shares of the budget, each ``eta`` times the last); the result
            lists the pruned settings. Between rungs the waiting candidates keep their weights
            and optimizer state in temporary files, so one candidate's model is in memory at a
            time. None trains every setting to the end.
        first_rung: the share of its budget every setting trains before the first pruning
            (it may end inside an epoch); None: as many rungs as the settings allow, from
            ``eta ** -s`` with ``eta ** s`` at most the number of settings.
        ties: successive halving also keeps the settings whose screening accuracy is within
            this many standard errors (binomial, on the screening subset) of the last one it
            keeps: what the subset cannot tell apart goes on. Only with the default metric
            (accuracy); 0: none.
        keep: settings successive halving never prunes.
        screening: between the rungs of successive halving, settings are ranked on a fixed
            subset of this many validation examples (the last rung measures on all of them).
        seed: seeds the model head, the batch order and everything else random.
        cache: reuse the frozen prefix's outputs (see ``frostline.torch._sweep._cache``).
        compare_uncached: also run every setting without the cache first, and keep that run as
            ``result.baseline`` (``result.speedup`` is the ratio). Not with ``halving``.
        deterministic: whether a loader's inputs are the same on every read; None checks a
            sample (random augmentation turns caching off), True caches without checking.
        device: where to train ("cuda", ...); default: where ``make_model`` puts the model.
        amp: mixed precision (bfloat16 autocast on the device).
        loss: ``loss(logits, labels)``, default cross-entropy.
        metric: ``metric(logits, labels) -> float`` on the whole validation set, higher is
            better; default accuracy.
        cache_memory_mb: cached features past this size go to a memory-mapped file.
        progress: True for a progress bar with the time left (on a terminal), or a callable
            called with the setting's label after every epoch.
        grouping: how to build the groups the settings refer to (:class:`~frostline.Grouping`).

    Returns:
        A :class:`SweepResult`.

    Raises:
        PlanError: a setting's plan does not fit the model, or the budget is not positive.
        SweepDataError: the data is malformed or holds NaN or infinite values.
        FrostlineError: ``make_model`` returned different pretrained weights on two calls.

    Example:
        >>> import torch, frostline as fl
        >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
        >>> make = lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                                    torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> result = fl.sweep(make, (x, y), (x, y), epochs=1)
        >>> [row.label for row in result.rows]
        ['1', '2', '3', 'LP-FT 3']
    """
    if epochs < 1 or batch_size < 1 or min_steps < 0:
        raise PlanError(f"the budget must be positive, got epochs={epochs}, "
                        f"batch_size={batch_size}, min_steps={min_steps}.")
    if screening < 1:
        raise PlanError(f"screening takes a number of validation examples, got {screening!r}.")
    if ties < 0:
        raise PlanError(f"ties is a number of standard errors, 0 or more; got {ties!r}.")
    if first_rung is not None and not 0 < first_rung <= 1:
        raise PlanError(f"first_rung is a share of the budget in (0, 1], got {first_rung!r}.")
    if halving is not None and (halving < 2 or compare_uncached):
        raise PlanError("halving takes an eta of 2 or more and does not combine with "
                        f"compare_uncached (got halving={halving!r}).")
    grid = [LearningRates(h, b) for h, b in lr_grid] if lr_grid else \
        [LearningRates(lr, lr if body_lr is None else body_lr)]
    train_src = source(train, "training", deterministic)
    val_src = source(val, "validation", deterministic)
    device = torch.device(device) if isinstance(device, str) else device
    autocast = _autocast(device, amp)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reference = make_model()
    resolved = resolve(reference, grouping=grouping)
    reference, view, groups = resolved.model, resolved.view, resolved.groups
    if device is not None:
        reference.to(device)
    settings = list(settings) if settings is not None else default_settings(len(groups))
    budget = epochs_for(train_src, epochs, min_steps, seed, batch_size)
    layout = recorded_layout(reference, groups, view, train_src, device)
    wanted = frozen_prefixes(reference, groups, view, settings, grouping)
    features = None
    if cache:
        features = FeatureCache(layout, reference, {"train": train_src, "val": val_src},
                                device, cache_memory_mb, autocast)
        features.prepare({b for b in wanted if 0 < b < len(groups)})
    notes = _notes(cache, features, wanted, len(groups), budget, epochs)
    modes = [False, True] if cache and compare_uncached else [cache]
    contexts = {mode: Context(make_model, groups, grouping, layout,
                              features if mode else None, train_src, val_src,
                              objective(loss, metric), budget, batch_size, seed, device, autocast,
                              screen=screening)
                for mode in modes}
    total = _epochs(settings, budget, len(grid) * len(modes), halving, first_rung)
    bar = progress_bar("sweep", total) if progress is True else \
        contextlib.nullcontext(progress or None)
    rows: dict[bool, list[SweepRow]] = {mode: [] for mode in modes}
    pruned = []
    with bar as advance:
        for ctx in contexts.values():
            ctx.progress = advance
        if halving:
            pairs = [(s, r) for s in settings for r in grid]
            measured, pruned = halve(lambda i: Run(contexts[cache], *pairs[i]), len(pairs),
                                     halving, [s.label for s, _ in pairs],
                                     frozenset(i for i, (s, _) in enumerate(pairs)
                                               if s in keep), first_rung,
                                     accuracy_margin(min(screening, val_src.n), ties)
                                     if ties and metric is None else None)
            rows[cache] = [_row(s, [measured[i] for i in range(len(pairs)) if pairs[i][0] == s])
                           for s in settings]
        else:
            # Settings run one at a time in every mode, so a slow patch of the machine hits
            # both; under torch.distributed each process runs its share of the settings.
            local = {(i, mode): run_all([Run(contexts[mode], setting, r) for r in grid])
                     for i, setting in enumerate(settings) if mine(i) for mode in modes}
            measured = gather(local)
            for mode in modes:
                rows[mode] = [_row(s, measured[(i, mode)]) for i, s in enumerate(settings)]
    results = {}
    for mode in modes:
        used = features if mode else None
        cache_seconds = used.seconds if used is not None else 0.0
        cache_cpu = used.cpu_seconds if used is not None else 0.0
        results[mode] = SweepResult(
            rows=tuple(rows[mode]),
            group_names=tuple(groups.names),
            cached=any(row.cached_groups for row in rows[mode]),
            notes=tuple(notes if mode else ["feature caching off: every setting runs the whole "
                                            "model"]),
            cache_seconds=cache_seconds,
            cache_cpu_seconds=cache_cpu,
            seconds=cache_seconds + sum(row.seconds for row in rows[mode]),
            cpu_seconds=cache_cpu + sum(row.cpu_seconds for row in rows[mode]),
            pruned=tuple(pruned),
        )
    if len(modes) == 2:
        return replace(results[True], baseline=results[False])
    return results[modes[0]]


def recorded_layout(reference: nn.Module, groups: Groups, view: TreeView, train: Source,
                    device: torch.device | None) -> Layout:
    """The order in which ``reference`` calls its modules, recorded on a few training examples
    (where the feature cache can cut the model)."""
    first = train.sample(RECORD)[1]
    sample = take(first, torch.arange(min(RECORD, batch_size_of(first))))
    with torch.random.fork_rng(devices=[]):
        return Layout(reference, groups, view, to_device(sample, device))


def frozen_prefixes(reference: nn.Module, groups: Groups, view: TreeView,
                    settings: Sequence[Setting], grouping: Grouping | None) -> set[int]:
    """How many leading groups each phase of ``settings`` freezes entirely."""
    return {frozen_prefix(groups, resolve_plan(reference, plan, grouping).mask, view)
            for s in settings for plan, _ in s.phases(1)}


def _epochs(settings: Sequence[Setting], budget: int, runs_per_setting: int,
            halving: int | None, first_rung: float | None = None) -> int:
    """About how many training epochs the sweep runs (the progress bar's total)."""
    full = sum(count for s in settings for _, count in s.phases(budget)) * runs_per_setting
    if not halving:
        return full
    return math.ceil(halving_share(len(settings) * runs_per_setting, halving, first_rung) * full)


def _autocast(device: torch.device | None, amp: bool) -> Callable[[], Any]:
    if not amp:
        return contextlib.nullcontext
    kind = device.type if device is not None else "cpu"
    return lambda: torch.autocast(kind, dtype=torch.bfloat16)


def _notes(cache: bool, features: FeatureCache | None, wanted: set[int], n_groups: int,
           budget: int, epochs: int) -> list[str]:
    notes = []
    if budget != epochs:
        notes.append(f"{budget} epochs per setting instead of {epochs}, for the minimum number "
                     "of optimizer steps (min_steps)")
    if not cache or features is None:
        return notes + ["feature caching off: every setting runs the whole model"]
    usable = sorted(b for b in wanted if features.usable(b))
    if usable:
        entries = ", ".join(f"{b}: {features.cuts[b].entry!r}" for b in usable)
        notes.append(f"feature caching on: the frozen groups run once per example and the "
                     f"groups above them train on cached features (boundary: first module "
                     f"above it: {entries})")
    for b in sorted(features.reasons):
        notes.append(f"feature caching off for settings that freeze the first {b} group(s): "
                     f"{features.reasons[b]}; they train on the whole model")
    if not usable and not features.reasons:
        notes.append("feature caching off: every setting trains its first group, so there is "
                     "no frozen prefix to cache")
    return notes


def _row(setting: Setting, runs: list[tuple[RunSummary, Outcome]]) -> SweepRow:
    """The row of ``setting``: its best run (finished, highest metric), costs summed."""
    def rank(item: tuple[RunSummary, Outcome]) -> tuple[int, float]:
        run, outcome = item
        finite = not run.diverged and math.isfinite(outcome.score)
        return (int(finite and outcome.pruned_after is None),
                outcome.score if finite else -math.inf)

    best_run, best = max(runs, key=rank)
    times = [t for run, _ in runs for t in run.epoch_times]
    pruned = [o.pruned_after for _, o in runs if o.pruned_after is not None]
    diverged = all(run.diverged for run, _ in runs)
    return SweepRow(
        setting=setting,
        label=setting.label,
        unlocked_groups=setting.unlocked_groups,
        trainable_params=best_run.trainable,
        val_accuracy=float("nan") if diverged else best.score,
        epochs=best_run.epochs,
        steps=best_run.steps,
        lr=best_run.lr,
        epoch_seconds=sum(times) / len(times) if times else 0.0,
        seconds=sum(run.seconds for run, _ in runs),
        cpu_seconds=sum(run.cpu_seconds for run, _ in runs),
        train_memory_mb=max(run.memory for run, _ in runs) / 2**20,
        cached_groups=max(run.cached_groups for run, _ in runs),
        plan=str(setting.plan),
        diverged=diverged,
        pruned_after=max(pruned) if len(pruned) == len(runs) else None,
        grid=tuple((run.lr, o.score) for run, o in runs),
    )
