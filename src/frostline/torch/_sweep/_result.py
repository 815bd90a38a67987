"""What a sweep measured: one row per setting, the pruned settings, and the uncached baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..._errors import FrostlineError
from ._settings import LearningRates, Setting


@dataclass(frozen=True)
class SweepRow:
    """What one setting measured.

    Attributes:
        setting: the setting (rows are matched to settings by value).
        label: the setting's label.
        unlocked_groups: groups the setting trains (None when the plan is not a count).
        trainable_params: trainable parameter elements (final phase).
        val_accuracy: the validation metric after the last epoch (accuracy unless the sweep was
            given another ``metric``); NaN when the setting diverged. A setting that successive
            halving stopped reports it on the screening subset of the validation set (at most
            ``screening`` examples, the whole set when it is smaller).
        epochs: training epochs run (both phases for LP-FT; fewer when pruned or diverged, and
            then possibly a fraction: successive halving may stop a setting inside an epoch).
        steps: optimizer steps run.
        lr: the learning rates of the reported run (the best of the grid).
        epoch_seconds: mean wall time of one training epoch.
        seconds: wall time of the setting (model, training, evaluation; every learning rate of
            the grid), without building cached features.
        cpu_seconds: CPU time of the process over the same spans (all threads).
        train_memory_mb: parameters + gradients + optimizer state + activations saved for
            backward in one training step, in MiB (measured on the tensors themselves).
        cached_groups: leading groups read from the feature cache (0: uncached).
        plan: the setting's plan, as text.
        diverged: the loss became NaN or infinite at every learning rate tried.
        pruned_after: epochs after which successive halving stopped the setting (None: it ran
            its whole budget).
        grid: ``(learning rates, validation metric)`` of every run of the setting.
    """

    setting: Setting
    label: str
    unlocked_groups: int | None
    trainable_params: int
    val_accuracy: float
    epochs: float
    steps: int
    lr: LearningRates
    epoch_seconds: float
    seconds: float
    cpu_seconds: float
    train_memory_mb: float
    cached_groups: int
    plan: str
    diverged: bool = False
    pruned_after: float | None = None
    grid: tuple[tuple[LearningRates, float], ...] = ()

    @property
    def finished(self) -> bool:
        """Ran its whole budget without diverging."""
        return not self.diverged and self.pruned_after is None and \
            math.isfinite(self.val_accuracy)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "unlocked_groups": self.unlocked_groups,
            "trainable_params": self.trainable_params, "val_accuracy": self.val_accuracy,
            "epochs": self.epochs, "steps": self.steps, "lr": self.lr.head,
            "body_lr": self.lr.body, "epoch_seconds": self.epoch_seconds,
            "seconds": self.seconds, "cpu_seconds": self.cpu_seconds,
            "train_memory_mb": self.train_memory_mb, "cached_groups": self.cached_groups,
            "plan": self.plan, "diverged": self.diverged, "pruned_after": self.pruned_after,
            "grid": [{"lr": lr.head, "body_lr": lr.body, "val_accuracy": value}
                     for lr, value in self.grid],
        }


@dataclass(frozen=True)
class Pruned:
    """A setting that successive halving stopped: when, and where it stood."""

    label: str
    after_epochs: float
    val_accuracy: float
    rung: int


@dataclass(frozen=True)
class SweepResult:
    """All rows of a sweep, how caching went, and (optionally) the uncached run beside it.

    Attributes:
        rows: one per setting, in the order given.
        group_names: the model's layer groups.
        cached: whether the feature cache was used for at least one setting.
        notes: what the sweep decided and why (caching support, fallbacks, pruning).
        cache_seconds: time spent computing and checking cached features.
        seconds: wall time of the settings plus the feature cache (model building excluded).
        cpu_seconds: the same span in process CPU time.
        baseline: the same settings trained without the cache, when compared.
        pruned: the settings successive halving stopped, in the order it stopped them.
    """

    rows: tuple[SweepRow, ...]
    group_names: tuple[str, ...]
    cached: bool
    notes: tuple[str, ...] = ()
    cache_seconds: float = 0.0
    cache_cpu_seconds: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    baseline: SweepResult | None = None
    pruned: tuple[Pruned, ...] = ()

    @property
    def best(self) -> SweepRow:
        """The finished row with the highest validation metric (the first one on ties).

        Raises:
            FrostlineError: no setting finished (every one diverged or was pruned).
        """
        finished = [row for row in self.rows if row.finished]
        if not finished:
            raise FrostlineError("no setting finished its budget (every one diverged); lower "
                                 "the learning rates or check the data.")
        return max(finished, key=lambda row: row.val_accuracy)

    def row(self, setting: Setting) -> SweepRow:
        """The row of ``setting`` (matched by value, not by label)."""
        for row in self.rows:
            if row.setting == setting:
                return row
        raise KeyError(setting)

    @property
    def speedup(self) -> float | None:
        """Uncached sweep time divided by this sweep's time, when both ran."""
        if self.baseline is None or not self.seconds:
            return None
        return self.baseline.seconds / self.seconds

    @property
    def cpu_speedup(self) -> float | None:
        """The same ratio in process CPU time."""
        if self.baseline is None or not self.cpu_seconds:
            return None
        return self.baseline.cpu_seconds / self.cpu_seconds

    @property
    def cached_speedup(self) -> float | None:
        """The same ratio over only the settings that read cached features (cache time included)."""
        if self.baseline is None:
            return None
        used = [row.setting for row in self.rows if row.cached_groups]
        mine = self.cache_seconds + sum(self.row(s).seconds for s in used)
        theirs = sum(self.baseline.row(s).seconds for s in used)
        return theirs / mine if used and mine else None

    def to_dict(self) -> dict[str, Any]:
        finished = [row for row in self.rows if row.finished]
        out: dict[str, Any] = {
            "groups": list(self.group_names),
            "cached": self.cached,
            "notes": list(self.notes),
            "cache_seconds": self.cache_seconds,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "rows": [row.to_dict() for row in self.rows],
            "best": self.best.label if finished else None,
            "pruned": [p.__dict__ for p in self.pruned],
        }
        if self.baseline is not None:
            out["uncached"] = self.baseline.to_dict()
            out["speedup"] = self.speedup
            out["cached_speedup"] = self.cached_speedup
            out["cpu_speedup"] = self.cpu_speedup
        return out
