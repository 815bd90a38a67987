"""The main job on the embedded default: the rules' pick, the measured choice, the full sweep.

The shipped network (trained on digits 0-4) is transferred to the two demo tasks; for each,
``fl.recommend`` proposes a plan from the dataset size and the kind of shift, ``fl.choose``
measures its way to a choice (cached features, successive halving), and the full sweep trains
every frost line (plus LP-FT and surgical fine-tuning of the first groups) to the end on the
same budget, with and without the feature cache, to show how close the two get.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..core.recommend import Recommendation, recommend
from ..torch._sweep import Choice, Setting, SweepResult, SweepRow, choose, default_settings, sweep
from ..torch._sweep._choose import ETA, FIRST_RUNG
from ..torch._sweep._halving import halving_share
from ..torch._sweep._settings import with_setting
from ._data import Task, tasks
from ._model import pretrained_digit_net, reset_head

EPOCHS = 8
LR = 3e-3


@dataclass(frozen=True)
class TaskResult:
    """One demo task: what was recommended, what was measured.

    Attributes:
        task: the task.
        recommendation: what ``fl.recommend`` proposed.
        recommended: the setting that implements the recommendation.
        result: the sweep (its ``baseline`` is the uncached run, when compared).
        choice: what ``fl.choose`` measured and chose on the same budget (None: not run).
    """

    task: Task
    recommendation: Recommendation
    recommended: Setting
    result: SweepResult
    choice: Choice | None = None

    @property
    def recommended_row(self) -> SweepRow:
        """The sweep row of the recommended setting."""
        return self.result.row(self.recommended)


def model_factory(task: Task) -> Callable[[], nn.Module]:
    """A function returning the pretrained network, with a new head if the task needs one."""

    def make() -> nn.Module:
        model = pretrained_digit_net()
        return reset_head(model, task.num_classes) if task.new_head else model

    return make


def demo_settings(n_groups: int, recommended: Setting, new_head: bool) -> list[Setting]:
    """Every frost line, LP-FT, surgical fine-tuning of the first 1 and 2 groups, and the
    recommended setting when it is none of those."""
    settings = default_settings(n_groups) + [Setting.surgical(k, head=new_head) for k in (1, 2)]
    return with_setting(settings, recommended)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """One thread and deterministic algorithms, restored afterwards."""
    threads = torch.get_num_threads()
    strict = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(strict)


Job = tuple[Any, Callable[[], nn.Module]]  # (task, make_model): a Task or a TextTask


def demo_jobs() -> list[Job]:
    """The two demo tasks with the shipped network."""
    return [(task, model_factory(task)) for task in tasks()]


def run_demo(epochs: int = EPOCHS, *, compare_uncached: bool = True, seed: int = 0,
             progress: Callable[[str], None] | None = None,
             measure: bool = True) -> list[TaskResult]:
    """Recommend, choose by measurement and sweep the frost line on both demo tasks.

    Args:
        epochs: training epochs per setting.
        compare_uncached: also train every setting without the feature cache, side by side.
        seed: the seed of every setting.
        progress: called after every training epoch.
        measure: also run ``fl.choose`` on the same budget.

    Returns:
        One :class:`TaskResult` per task.
    """
    return run_tasks(demo_jobs(), epochs, compare_uncached=compare_uncached, seed=seed,
                     progress=progress, measure=measure)


def run_tasks(jobs: Sequence[Job], epochs: int, *, compare_uncached: bool = True,
              seed: int = 0, progress: Callable[[str], None] | None = None,
              measure: bool = True, lr: float = LR, body_lr: float | None = None
              ) -> list[TaskResult]:
    """:func:`run_demo` on any ``(task, make_model)`` pairs (the text tasks, ...).

    A task has ``train``, ``val`` (tensors or loaders), ``n_train``, ``domain_shift`` and
    ``new_head``; ``lr`` and ``body_lr`` are the head's and the other groups' Adam rates.
    """
    out = []
    with deterministic():
        for task, make in jobs:
            rec = recommend(make(), task.n_train, task.domain_shift, new_head=task.new_head)
            chosen = Setting.from_recommendation(rec)
            settings = demo_settings(rec.n_groups, chosen, task.new_head)
            choice = choose(make, task.train, task.val, shift=task.domain_shift,
                            new_head=task.new_head, epochs=epochs, seed=seed, min_steps=0,
                            lr=lr, body_lr=body_lr, progress=progress) if measure else None
            result = sweep(make, task.train, task.val, settings, epochs=epochs, seed=seed,
                           lr=lr, body_lr=body_lr, compare_uncached=compare_uncached,
                           progress=progress)
            out.append(TaskResult(task, rec, chosen, result, choice))
    return out


def demo_steps(epochs: int = EPOCHS, compare_uncached: bool = True,
               measure: bool = True) -> int:
    """About how many progress calls :func:`run_demo` makes (for a progress bar's total)."""
    return steps(demo_jobs(), epochs, compare_uncached, measure)


def steps(jobs: Sequence[Job], epochs: int, compare_uncached: bool = True,
          measure: bool = True) -> int:
    """About how many progress calls :func:`run_tasks` makes on ``jobs``."""
    total = 0
    for task, make in jobs:
        rec = recommend(make(), task.n_train, task.domain_shift, new_head=task.new_head)
        settings = demo_settings(rec.n_groups, Setting.from_recommendation(rec), task.new_head)
        total += sum(e for s in settings for _, e in s.phases(epochs)) * (
            2 if compare_uncached else 1)
        if measure:
            total += round(halving_share(len(settings), ETA, FIRST_RUNG) * len(settings)
                           * epochs)
    return total
