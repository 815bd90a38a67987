"""When each part of a model thaws during gradual unfreezing: a plan for every epoch (or step).

Framework-free, shared by both backends: PyTorch's :class:`~frostline.Unfreezer` grows an
optimizer with it, JAX's :func:`~frostline.thaw` re-partitions a model and its optax state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .._errors import PlanError
from .plan import Plan

UNITS = ("epoch", "step")


@dataclass(frozen=True)
class UnfreezeSchedule:
    """When each part of a model thaws: a plan for every epoch (or step).

    Build one with :meth:`gradual` or :meth:`from_plans`.

    Attributes:
        every: thaw one more layer group every ``every`` epochs/steps (gradual schedules).
        start: layer groups (from the head) trainable at time 0 (gradual schedules).
        plans: ``(time, plan)`` pairs, ascending, the first at time 0 (explicit schedules).
        unit: "epoch" or "step": what the time counts (read by the Lightning callback).
        freeze_bn_stats: in frozen groups, BatchNorm running statistics stay fixed even in
            ``train()`` mode (gradual schedules).
        train_bn: in frozen groups, the affine parameters of normalisation layers still train
            (fastai's ``train_bn``); their statistics follow ``freeze_bn_stats`` (gradual).
    """

    every: int | None = None
    start: int = 1
    plans: tuple[tuple[int, Plan], ...] = ()
    unit: str = "epoch"
    freeze_bn_stats: bool = True
    train_bn: bool = False

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise PlanError(f"unit must be one of {UNITS}, got {self.unit!r}.")
        if (self.every is None) == (not self.plans):
            raise PlanError(
                "a schedule needs either every=n (gradual) or plans={time: plan} (explicit); "
                "use UnfreezeSchedule.gradual(...) or UnfreezeSchedule.from_plans(...)."
            )

    @classmethod
    def gradual(cls, every: int = 1, *, start: int = 1, unit: str = "epoch",
                freeze_bn_stats: bool = True, train_bn: bool = False) -> UnfreezeSchedule:
        """Thaw one more layer group, from the head down, every ``every`` epochs (or steps).

        Args:
            every: epochs (or steps) between two thaws.
            start: groups trainable at time 0 (1: only the head, as ULMFiT).
            unit: "epoch" or "step".
            freeze_bn_stats: BatchNorms of frozen groups keep their running statistics fixed,
                even in ``train()`` mode (default True: frozen means frozen). A thawed group's
                BatchNorms update their statistics again.
            train_bn: the affine parameters of normalisation layers in frozen groups train
                anyway (fastai's ``train_bn``); independent of ``freeze_bn_stats``, which alone
                decides whether their running statistics move.

        Example:
            >>> s = UnfreezeSchedule.gradual(every=2, start=1)
            >>> [s.plan_at(t, n_groups=3).unlocked_groups for t in range(6)]
            [1, 1, 2, 2, 3, 3]
        """
        for label, value, low in (("every", every, 1), ("start", start, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise PlanError(f"{label} must be an int >= {low}, got {value!r}.")
        return cls(every=every, start=start, unit=unit, freeze_bn_stats=freeze_bn_stats,
                   train_bn=train_bn)

    @classmethod
    def from_plans(cls, plans: Mapping[int, Plan], *, unit: str = "epoch") -> UnfreezeSchedule:
        """An explicit schedule: ``plans[t]`` holds from time ``t`` until the next key.

        Example:
            >>> s = UnfreezeSchedule.from_plans({0: Plan.lock(1), 3: Plan()})
            >>> str(s.plan_at(2, n_groups=4)), str(s.plan_at(3, n_groups=4))
            ('Plan(freeze **, unfreeze group:-1:; unlocked_groups=1)', 'Plan(everything trainable)')
        """
        if not isinstance(plans, Mapping) or not plans:
            raise PlanError(f"plans must be a non-empty {{time: Plan}} mapping, got {plans!r}.")
        bad = [t for t in plans if isinstance(t, bool) or not isinstance(t, int) or t < 0]
        if bad:
            raise PlanError(f"schedule times must be non-negative ints, got {bad[0]!r}.")
        if 0 not in plans:
            raise PlanError(
                f"an explicit schedule needs a plan for time 0 (what trains from the start); "
                f"got times {sorted(plans)}."
            )
        wrong = [p for p in plans.values() if not isinstance(p, Plan)]
        if wrong:
            raise PlanError(f"schedule values must be Plans, got {type(wrong[0]).__name__}.")
        return cls(plans=tuple(sorted(plans.items(), key=lambda item: item[0])), unit=unit)

    def plan_at(self, time: int, n_groups: int) -> Plan:
        """The plan that holds at ``time`` on a model with ``n_groups`` layer groups."""
        if self.every is not None:
            unlocked = min(self.start + time // self.every, n_groups)
            return Plan.lock(unlocked, self.freeze_bn_stats).with_bn(train_bn=self.train_bn)
        current = self.plans[0][1]
        for start, plan in self.plans:
            if start <= time:
                current = plan
        return current
