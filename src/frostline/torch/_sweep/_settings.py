"""What a sweep compares: settings (a plan, optionally after a linear probe) and learning rates.

A setting is identified by its value (plan, probe length, group count), never by how it is
shown: ``Setting.lp_ft(2)`` and ``Setting.lp_ft(5)`` are different settings with different
labels ("LP-FT 2", "LP-FT 5").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..._errors import PlanError
from ...core.plan import Plan

PROBE_PLAN = Plan.lock(1, freeze_bn_stats=True)


@dataclass(frozen=True)
class LearningRates:
    """Adam learning rates: one for the head (the last group), one for every other group.

    Example:
        >>> LearningRates(1e-2, 1e-3)
        LearningRates(head=0.01, body=0.001)
    """

    head: float
    body: float

    def __post_init__(self) -> None:
        if not (self.head > 0 and self.body > 0 and math.isfinite(self.head)
                and math.isfinite(self.body)):
            raise PlanError(f"learning rates must be positive and finite, got head={self.head!r}, "
                            f"body={self.body!r}.")

    def __str__(self) -> str:
        return f"{self.head:g}" if self.head == self.body else \
            f"head {self.head:g}, body {self.body:g}"


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: a plan, optionally preceded by a linear probe (LP-FT).

    Attributes:
        label: how the setting is shown ("2", "LP-FT 5", "first 1 + head", ...).
        plan: what trains (in the fine-tuning phase, for LP-FT).
        probe_fraction: LP-FT only: the linear-probe phase (the head alone) lasts this share of
            the fine-tuning epochs, rounded up, and runs before them; the fine-tuning phase gets
            the whole budget, as every other setting does.
        unlocked_groups: the number of groups the plan trains (shown on the plot's x axis).

    Example:
        >>> Setting.lock(2).plan.unlocked_groups, Setting.lp_ft(5).label
        (2, 'LP-FT 5')
        >>> Setting.lp_ft(5).phases(3)[0][1], Setting.lp_ft(5).phases(3)[1][1]
        (2, 3)
    """

    label: str
    plan: Plan
    probe_fraction: float = 0.0
    unlocked_groups: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.probe_fraction <= 1.0:
            raise PlanError(f"probe_fraction is the length of the linear probe as a share of the "
                            f"fine-tuning epochs, in [0, 1]; got {self.probe_fraction!r}.")

    @classmethod
    def lock(cls, unlocked_groups: int) -> Setting:
        """The last ``unlocked_groups`` groups train; BatchNorm statistics of the rest are fixed."""
        return cls(str(unlocked_groups), Plan.lock(unlocked_groups, freeze_bn_stats=True),
                   unlocked_groups=unlocked_groups)

    @classmethod
    def lp_ft(cls, unlocked_groups: int, probe_fraction: float = 0.5) -> Setting:
        """LP-FT: the head alone first, then the last ``unlocked_groups`` groups."""
        if probe_fraction <= 0:
            raise PlanError(f"LP-FT needs a probe phase: probe_fraction > 0, got "
                            f"{probe_fraction!r}.")
        return cls(f"LP-FT {unlocked_groups}", Plan.lock(unlocked_groups, freeze_bn_stats=True),
                   probe_fraction, unlocked_groups)

    @classmethod
    def surgical(cls, first_groups: int, head: bool = True) -> Setting:
        """Surgical fine-tuning: the first ``first_groups`` groups train (and the head)."""
        plan = Plan().freeze("**").unfreeze(f"group::{first_groups}")
        if head:
            plan = plan.unfreeze("group:-1:")
        label = f"first {first_groups}" + (" + head" if head else "")
        return cls(label, plan.with_bn(freeze_bn_stats=True),
                   unlocked_groups=first_groups + int(head))

    @classmethod
    def from_recommendation(cls, recommendation: Any) -> Setting:
        """The setting that trains what a :class:`~frostline.core.recommend.Recommendation` says."""
        groups = recommendation.trainable_groups
        n = recommendation.n_groups
        if recommendation.strategy == "surgical":
            head = n - 1 in groups
            return cls.surgical(len(groups) - int(head), head=head)
        if recommendation.strategy == "lp-ft":
            return cls.lp_ft(recommendation.unlocked_groups)
        return cls.lock(recommendation.unlocked_groups)

    @property
    def is_lp_ft(self) -> bool:
        return self.probe_fraction > 0

    def phases(self, epochs: int) -> list[tuple[Plan, int]]:
        """``[(plan, epochs), ...]`` in order: the probe (LP-FT only), then the plan."""
        if not self.is_lp_ft:
            return [(self.plan, epochs)]
        return [(PROBE_PLAN, max(1, math.ceil(epochs * self.probe_fraction))),
                (self.plan, epochs)]


def default_settings(n_groups: int) -> list[Setting]:
    """``Setting.lock(k)`` for ``k`` in 1..n_groups, then LP-FT over all groups.

    Example:
        >>> [s.label for s in default_settings(3)]
        ['1', '2', '3', 'LP-FT 3']
    """
    return [Setting.lock(k) for k in range(1, n_groups + 1)] + [Setting.lp_ft(n_groups)]


def with_setting(settings: list[Setting], extra: Setting) -> list[Setting]:
    """``settings`` plus ``extra`` when no setting of the same value is there yet."""
    return settings if extra in settings else [*settings, extra]
