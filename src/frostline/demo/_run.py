"""The main job on the embedded default: recommend a frost line, sweep it, compare.

The shipped network (trained on digits 0-4) is transferred to the two demo tasks; for each,
``fl.recommend`` proposes a plan from the dataset size and the kind of shift, and the sweep
measures every frost line (plus LP-FT and surgical fine-tuning of the first groups) on the same
budget, with and without the feature cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..core.recommend import Recommendation, recommend
from ..torch._sweep import Setting, SweepResult, SweepRow, default_settings, sweep
from ..torch._sweep._settings import with_setting
from ._data import Task, tasks
from ._model import pretrained_digit_net, reset_head

EPOCHS = 8


@dataclass(frozen=True)
class TaskResult:
    """One demo task: what was recommended, what was measured.

    Attributes:
        task: the task.
        recommendation: what ``fl.recommend`` proposed.
        recommended: the setting that implements the recommendation.
        result: the sweep (its ``baseline`` is the uncached run, when compared).
    """

    task: Task
    recommendation: Recommendation
    recommended: Setting
    result: SweepResult

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


def run_demo(epochs: int = EPOCHS, *, compare_uncached: bool = True, seed: int = 0,
             progress: Callable[[str], None] | None = None) -> list[TaskResult]:
    """Recommend and sweep the frost line on both demo tasks.

    Args:
        epochs: training epochs per setting.
        compare_uncached: also train every setting without the feature cache, side by side.
        seed: the seed of every setting.
        progress: called after every training epoch.

    Returns:
        One :class:`TaskResult` per task.
    """
    out = []
    with deterministic():
        for task in tasks():
            make = model_factory(task)
            rec = recommend(make(), len(task.train[1]), task.domain_shift,
                            new_head=task.new_head)
            chosen = Setting.from_recommendation(rec)
            settings = demo_settings(rec.n_groups, chosen, task.new_head)
            result = sweep(make, task.train, task.val, settings, epochs=epochs, seed=seed,
                           compare_uncached=compare_uncached, progress=progress)
            out.append(TaskResult(task, rec, chosen, result))
    return out


def demo_steps(epochs: int = EPOCHS, compare_uncached: bool = True) -> int:
    """How many progress calls :func:`run_demo` makes (for a progress bar's total)."""
    total = 0
    for task in tasks():
        rec = recommend(model_factory(task)(), len(task.train[1]), task.domain_shift,
                        new_head=task.new_head)
        settings = demo_settings(rec.n_groups, Setting.from_recommendation(rec), task.new_head)
        total += sum(e for s in settings for _, e in s.phases(epochs)) * (
            2 if compare_uncached else 1)
    return total
