"""Gradual unfreezing: thaw more of a model as training goes, growing an existing optimizer.

An :class:`UnfreezeSchedule` says which plan holds at each epoch (or step): one more layer group
every ``n`` (ULMFiT, fastai's ``fine_tune``, Lightning's ``BackboneFinetuning``), or an explicit
``{epoch: plan}`` map. An :class:`Unfreezer` applies it to one model: at each call of
:meth:`Unfreezer.step` it applies the plan that holds now and adds the newly trainable
parameters to the optimizer as new parameter groups, with the learning rate, layer-wise scale
and weight decay :func:`~frostline.param_groups` would give them. Parameters already in the
optimizer are never added twice and keep their optimizer state.

Learning-rate schedulers built before groups were added must be told about them:
:func:`extend_scheduler` (called by ``step`` when given the scheduler) appends the new groups'
initial rates to ``base_lrs`` and, for ``LambdaLR``/``MultiplicativeLR``, to ``lr_lambdas``
(without that, torch's ``LambdaLR.step()`` raises, as its per-group lists are too short), and
starts each new group where the schedule is now: a group thawed when a cosine schedule has
annealed the others to 0.85 of their rates starts at 0.85 of its own, so layer-wise decay ratios
hold through the thaw.

Resuming: save ``unfreezer.state_dict()`` with the optimizer's and scheduler's state dicts;
in the new process build the model, the optimizer (from ``unfreezer.param_groups()``) and the
scheduler as at the start, call ``unfreezer.load_state_dict(state, optimizer, scheduler)`` (it
thaws and re-adds the saved groups in their order), then ``optimizer.load_state_dict`` and
``scheduler.load_state_dict``.
"""

from __future__ import annotations

import bisect
import types
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .._errors import CheckpointError, PlanError
from ..core.groups import Grouping, Groups
from ..core.plan import Plan
from ..core.resolve import Resolved, resolve
from ..core.schedule import UnfreezeSchedule
from ._param_groups import DEFAULT_NO_DECAY, build_param_groups

_STATE_VERSION = 1


class Unfreezer:
    """Apply an :class:`UnfreezeSchedule` to one model and grow its optimizer as groups thaw.

    Args:
        model: the model (the plan for time 0 is applied right away).
        schedule: the schedule.
        lr: base learning rate of newly added groups (times their layer-wise ``lr_scale``).
        weight_decay, layer_decay, no_decay, min_scale: as for :func:`frostline.param_groups`.
        grouping: how to build the groups the schedule counts and thaws
            (:class:`~frostline.Grouping`; default: the model's own grouping).

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
        >>> unfreezer = fl.Unfreezer(net, fl.UnfreezeSchedule.gradual(every=1), lr=0.1)
        >>> opt = torch.optim.SGD(unfreezer.param_groups(), lr=0.1)
        >>> [g["name"] for g in unfreezer.step(1, opt)]
        ['no_decay']
        >>> sum(len(g["params"]) for g in opt.param_groups)
        4
    """

    def __init__(self, model: nn.Module, schedule: UnfreezeSchedule, *, lr: float,
                 weight_decay: float = 0.0, layer_decay: float | None = None,
                 no_decay: Any = DEFAULT_NO_DECAY, min_scale: float = 0.0,
                 grouping: Grouping | None = None) -> None:
        if not isinstance(schedule, UnfreezeSchedule):
            raise PlanError(
                f"expected an UnfreezeSchedule, got {type(schedule).__name__}; build one with "
                "fl.UnfreezeSchedule.gradual(every=...) or fl.UnfreezeSchedule.from_plans(...)."
            )
        resolved = resolve(model, grouping=grouping)
        self.model = resolved.model
        self.schedule = schedule
        self.grouping = grouping
        self._options = dict(lr=lr, weight_decay=weight_decay, layer_decay=layer_decay,
                             no_decay=no_decay, min_scale=min_scale)
        self.groups: Groups = resolved.groups
        self.time = 0
        self.plan = schedule.plan_at(0, len(self.groups))
        self.added: list[dict[str, Any]] = []
        self._apply(self.plan)

    def param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups of what trains now, for building the optimizer at the start."""
        return build_param_groups(self._resolved(), groups=self.groups, **self._options)

    def step(self, time: int, optimizer: torch.optim.Optimizer,
             scheduler: Any = None) -> list[dict[str, Any]]:
        """Move to ``time`` (an epoch or step count): apply its plan and grow ``optimizer``.

        Call it at the start of every epoch (or step) with the same optimizer. Parameters that
        the plan freezes again stay in the optimizer (their state is kept) but their ``.grad``
        is set to None so no optimizer moves them.

        Args:
            time: the current epoch (or step), from 0.
            optimizer: the optimizer to add newly trainable parameters to.
            scheduler: an LR scheduler of ``optimizer`` to extend (see :func:`extend_scheduler`).

        Returns:
            The parameter groups added now (empty when nothing thawed).
        """
        self.time = time
        plan = self.schedule.plan_at(time, len(self.groups))
        if plan != self.plan:
            self.plan = plan
            self._apply(plan)
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if not param.requires_grad:
                    param.grad = None
        fresh = {n for n, p in self.model.named_parameters()
                 if p.requires_grad and id(p) not in in_optimizer}
        if not fresh:
            return []
        new = build_param_groups(self._resolved(), groups=self.groups, only=fresh,
                                 **self._options)
        self._add(optimizer, new, scheduler)
        return new

    def state_dict(self) -> dict[str, Any]:
        """The time and the groups added so far (by parameter name), for checkpoints."""
        return {"version": _STATE_VERSION, "time": self.time, "added": [dict(g) for g in self.added]}

    def load_state_dict(self, state: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                        scheduler: Any = None) -> None:
        """Restore a :meth:`state_dict` onto a fresh model, optimizer and scheduler.

        Thaws what was thawed at the saved time and re-adds the saved groups in their order, so
        ``optimizer.load_state_dict`` (call it next) finds the same groups.

        Raises:
            CheckpointError: the state is malformed, or names parameters the model lacks.
        """
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION or not (
                isinstance(state.get("time"), int) and isinstance(state.get("added"), list)):
            raise CheckpointError(
                f"not an Unfreezer state (version {_STATE_VERSION} with 'time' and 'added'): "
                f"got {state!r:.200}."
            )
        if self.added:
            raise CheckpointError(
                "this Unfreezer already added groups; load its state right after building the "
                "model, the optimizer and the scheduler, before the first step."
            )
        self.time = state["time"]
        self.plan = self.schedule.plan_at(self.time, len(self.groups))
        self._apply(self.plan)
        params = dict(self.model.named_parameters())
        restored = []
        for saved in state["added"]:
            missing = [n for n in saved["param_names"] if n not in params]
            if missing:
                raise CheckpointError(
                    f"the saved unfreezing state names '{missing[0]}', which this model lacks; "
                    "load it onto the same architecture it was saved from."
                )
            group = {k: v for k, v in saved.items() if k != "param_names"}
            group["params"] = [params[n] for n in saved["param_names"]]
            restored.append(group)
        self._add(optimizer, restored, scheduler)

    def _apply(self, plan: Plan) -> None:
        resolved = self._resolved(plan)
        resolved.backend.apply(resolved)

    def _resolved(self, plan: Plan | None = None) -> Resolved:
        """The model resolved (under ``plan``) with this unfreezer's grouping."""
        return resolve(self.model, plan, self.grouping)

    def _add(self, optimizer: torch.optim.Optimizer, new: Sequence[dict[str, Any]],
             scheduler: Any) -> None:
        names = {id(p): n for n, p in self.model.named_parameters()}
        named = any("param_names" in g for g in optimizer.param_groups)
        for group in new:
            param_names = [names[id(p)] for p in group["params"]]
            if named:
                group["param_names"] = param_names
            optimizer.add_param_group(group)
            record = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
            record["param_names"] = param_names
            self.added.append(record)
        if scheduler is not None:
            extend_scheduler(scheduler)


def extend_scheduler(scheduler: Any) -> None:
    """Make an LR scheduler cover every parameter group its optimizer has now, where it is now.

    Schedulers keep per-group lists sized when they were built; groups added later (by an
    :class:`Unfreezer`, or restored on resume) are missing from them, and torch's ``LambdaLR``
    then raises on its next ``step()``. For each group the lists lack, this sets the group's
    ``initial_lr`` (to its current ``lr``, the rate it would have had from the start), appends
    it to ``base_lrs`` (and a copy of the first entry of ``lr_lambdas`` or ``min_lrs``), and
    sets the group's ``lr`` to where the schedule is now: ``initial_lr`` times the scheduler's
    current factor. A group thawed half-way through a cosine schedule so starts at the same
    fraction of its own rate as the groups that trained from the start, and layer-wise decay
    ratios hold. A scheduler that covers every group already is left as it is.

    The current factor: ``lr_lambda(last_epoch)`` for ``LambdaLR``; the ratio ``lr /
    initial_lr`` of the first group for the multiplicative schedulers (``StepLR``,
    ``MultiStepLR``, ``ExponentialLR``, ``ConstantLR``, ``LinearLR``, ``PolynomialLR``,
    ``MultiplicativeLR``, ``ChainedScheduler`` of these); the same above ``eta_min`` for
    ``CosineAnnealingLR`` and ``CosineAnnealingWarmRestarts``; the active scheduler's for
    ``SequentialLR``; the smallest ``lr / initial_lr`` of any group for ``ReduceLROnPlateau``
    (the reductions so far; groups held at ``min_lr`` show less), bounded below by ``min_lr``.

    Raises:
        PlanError: for ``OneCycleLR`` and ``CyclicLR``, whose per-group settings live in the
            param groups themselves, and for schedulers whose factor can't be told
            (other scheduler classes, a ``ReduceLROnPlateau`` whose groups don't record
            ``initial_lr``, a cosine with ``eta_min`` inside a ``ChainedScheduler``); rebuild
            those schedulers after thawing instead. Nothing is changed then.

    Example:
        >>> import torch, frostline as fl
        >>> a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        >>> opt = torch.optim.SGD(a.parameters(), lr=1.0)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        >>> opt.step(); sched.step()
        >>> opt.add_param_group({"params": b.parameters(), "lr": 0.8})
        >>> fl.extend_scheduler(sched)
        >>> [g["lr"] for g in opt.param_groups], sched.base_lrs
        ([0.5, 0.4], [1.0, 0.8])
    """
    if not _short(scheduler):
        return
    follow = _follower(scheduler)
    groups = scheduler.optimizer.param_groups
    for group in groups[_covered(scheduler):]:
        group["lr"] = follow(group.setdefault("initial_lr", group["lr"]))
    _extend_lists(scheduler)


def _schedulers() -> tuple[Any, ...]:
    from torch.optim import lr_scheduler as s

    multiplicative = (s.LambdaLR, s.MultiplicativeLR, s.StepLR, s.MultiStepLR, s.ExponentialLR,
                      s.ConstantLR, s.LinearLR, s.PolynomialLR)
    return s, multiplicative, (s.CosineAnnealingLR, s.CosineAnnealingWarmRestarts)


def _follower(scheduler: Any) -> Any:
    """``initial_lr -> lr`` of a group joining ``scheduler`` now; raises before any change."""
    s, multiplicative, cosine = _schedulers()
    name = type(scheduler).__name__
    if isinstance(scheduler, (s.OneCycleLR, s.CyclicLR)):
        raise PlanError(
            f"{name} keeps per-group settings in the optimizer's param groups and cannot be "
            "extended; rebuild it after the groups were added."
        )
    if isinstance(scheduler, s.SequentialLR):
        for child in scheduler._schedulers:
            _follower(child)
        active = bisect.bisect_right(scheduler._milestones, scheduler.last_epoch)
        return _follower(scheduler._schedulers[active])
    if isinstance(scheduler, s.ChainedScheduler):
        for child in scheduler._schedulers:
            _follower(child)
            if isinstance(child, cosine) and child.eta_min:
                raise PlanError(
                    f"a {type(child).__name__} with eta_min inside a ChainedScheduler does not "
                    "scale every group by one factor, so a thawed group's rate can't be told; "
                    "rebuild the scheduler after thawing, or use eta_min=0."
                )
        return _ratio(scheduler, 0.0)
    if isinstance(scheduler, s.LambdaLR):
        factor = scheduler.lr_lambdas[0](scheduler.last_epoch)
        return lambda initial: initial * factor
    if isinstance(scheduler, multiplicative):
        return _ratio(scheduler, 0.0)
    if isinstance(scheduler, cosine):
        return _ratio(scheduler, float(scheduler.eta_min))
    if isinstance(scheduler, s.ReduceLROnPlateau):
        return _plateau(scheduler)
    raise PlanError(
        f"frostline can't tell where a {name} is in its schedule, so it can't give a thawed "
        "group its rate; use one of torch's LambdaLR, StepLR, MultiStepLR, ExponentialLR, "
        "ConstantLR, LinearLR, PolynomialLR, MultiplicativeLR, CosineAnnealingLR, "
        "CosineAnnealingWarmRestarts, SequentialLR, ChainedScheduler or ReduceLROnPlateau, or "
        "rebuild the scheduler after thawing."
    )


def _ratio(scheduler: Any, floor: float) -> Any:
    """Follow the first covered group's ``(lr - floor) / (initial_lr - floor)``."""
    for group in scheduler.optimizer.param_groups[:_covered(scheduler)]:
        span = float(group["initial_lr"]) - floor
        if span:
            factor = (float(group["lr"]) - floor) / span
            return lambda initial: floor + (initial - floor) * factor
    raise PlanError(
        f"every group of the {type(scheduler).__name__} starts at its floor rate {floor}, so "
        "its current factor can't be told; rebuild the scheduler after thawing."
    )


def _plateau(scheduler: Any) -> Any:
    covered = scheduler.optimizer.param_groups[:_covered(scheduler)]
    factors = [float(g["lr"]) / float(g["initial_lr"]) for g in covered
               if float(g.get("initial_lr", 0.0))]
    if not factors:
        raise PlanError(
            "ReduceLROnPlateau does not record the rates it started from, and the optimizer's "
            "groups have no 'initial_lr', so how far it has reduced them can't be told; build "
            "the optimizer from fl.param_groups(...) or Unfreezer.param_groups() (their groups "
            "record it), or set group['initial_lr'] on each group before training."
        )
    factor, floor = min(factors), float(scheduler.min_lrs[0])
    return lambda initial: min(initial, max(initial * factor, floor))


def _covered(scheduler: Any) -> int:
    """How many of the optimizer's groups the scheduler's per-group lists cover."""
    s, _, _ = _schedulers()
    if isinstance(scheduler, (s.SequentialLR, s.ChainedScheduler)):
        return _covered(scheduler._schedulers[0])
    if isinstance(scheduler, s.ReduceLROnPlateau):
        return len(scheduler.min_lrs)
    return len(scheduler.base_lrs)


def _short(scheduler: Any) -> bool:
    """Whether a per-group list of ``scheduler`` lacks some of its optimizer's groups.

    Schedulers without such lists (not torch's) count as short: they can't be checked.
    """
    children = getattr(scheduler, "_schedulers", None)
    if children is not None:
        return any(_short(child) for child in children)
    count = len(scheduler.optimizer.param_groups)
    lists = [getattr(scheduler, key, None) for key in ("base_lrs", "lr_lambdas", "min_lrs")]
    lists = [entries for entries in lists if entries is not None]
    return not lists or any(len(entries) < count for entries in lists)


def _extend_lists(scheduler: Any) -> None:
    s, _, _ = _schedulers()
    groups = scheduler.optimizer.param_groups
    if isinstance(scheduler, (s.SequentialLR, s.ChainedScheduler)):
        for child in scheduler._schedulers:
            _extend_lists(child)
    elif isinstance(scheduler, s.ReduceLROnPlateau):
        scheduler.min_lrs.extend([scheduler.min_lrs[0]] * (len(groups) - len(scheduler.min_lrs)))
    else:
        scheduler.base_lrs.extend(g["initial_lr"] for g in groups[len(scheduler.base_lrs):])
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if lambdas is not None:
            lambdas.extend([_same_as(lambdas[0])] * (len(groups) - len(lambdas)))
    last = getattr(scheduler, "_last_lr", None)
    if last is not None:
        last.extend(g["lr"] for g in groups[len(last):])


def _same_as(lr_lambda: Any) -> Any:
    """``lr_lambda`` as a plain function, so the scheduler's state dict stores nothing for it.

    ``LambdaLR.state_dict`` stores the ``__dict__`` of lambdas that are objects (a
    ``functools.partial``, as transformers' schedules are) and ``load_state_dict`` writes them
    back by position; a resumed run's scheduler, built before the added groups were restored,
    then lacks those positions and raises. A plain function is stored as None and skipped; it
    calls the first lambda, whose own state is restored at position 0.
    """
    if isinstance(lr_lambda, types.FunctionType):
        return lr_lambda

    def same(epoch: int) -> float:
        return lr_lambda(epoch)

    return same
