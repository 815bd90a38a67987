"""One path from a model to what trains: unwrap, view, groups, mask, fixed statistics.

Every operation on a model (lock, apply, summary, explain, partition, guard, checkpoints,
parameter groups, schedules, the sweep, the command line) starts from one :class:`Resolved`
value, computed once per call, and never rebuilds a piece of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ._gc import paused_gc
from .groups import Grouping, Groups
from .leaves import PARAM, TreeView
from .mask import Mask
from .plan import Plan, current_state

if TYPE_CHECKING:
    from .backend import Backend


@dataclass(frozen=True, eq=False)
class Resolved:
    """A model seen through frostline: what :func:`resolve` returns.

    Attributes:
        model: the model itself, with wrappers (``torch.compile``, ``DataParallel``, DDP)
            removed; every name is this model's.
        wrapper: what was passed in (``model`` itself when it was not wrapped).
        backend: the backend that handles the model.
        view: the model's tree view (leaves in order, with their current state).
        plan: the plan evaluated, or None (then ``mask`` is the model's current state).
        grouping: the grouping passed to :func:`resolve` (it overrides the plan's fields).
        given_mask: a ready :class:`Mask` passed instead of a plan (checked against the view).
    """

    model: Any
    wrapper: Any
    backend: Backend
    view: TreeView
    plan: Plan | None = None
    grouping: Grouping = field(default_factory=Grouping)
    given_mask: Mask | None = None
    _cache: dict[Grouping, Groups] = field(default_factory=dict, repr=False)

    def groups_for(self, grouping: Grouping) -> Groups:
        """The groups built with ``grouping`` (under the resolve call's own), computed once."""
        effective = self.grouping.over(grouping)
        key = effective.without_input()
        if key not in self._cache:
            self._cache[key] = self.backend.groups(self.model, self.view, effective)
        return self._cache[key]

    @cached_property
    def groups(self) -> Groups:
        """The layer groups (of the plan's first step, when there is a plan)."""
        return self.groups_for(self.plan.grouping if self.plan is not None else Grouping())

    @cached_property
    def mask(self) -> Mask:
        """What trains: the plan evaluated on the view, or the model's current state."""
        if self.given_mask is not None:
            return self.given_mask
        if self.plan is None:
            return current_state(self.view)
        with paused_gc():
            return self.plan.evaluate(self.view, self.groups_for)

    @property
    def decided(self) -> bool:
        """True when a plan or a mask says what trains (not only the model's current state)."""
        return self.plan is not None or self.given_mask is not None

    @property
    def frozen_stats(self) -> frozenset[str]:
        """Paths of the BatchNorm modules whose running statistics are (to be) fixed."""
        return frozenset(self.mask.frozen_stats)

    def trainable_names(self) -> list[str]:
        """Trainable parameters, each shared tensor once, as ``named_parameters()`` names them."""
        canonical = self.view.canonical
        return [leaf.name for leaf, trainable in zip(self.view, self.mask.trainable)
                if trainable and leaf.kind == PARAM and canonical[leaf.name] == leaf.name]

    def frozen_names(self) -> list[str]:
        """Frozen parameters, each shared tensor once."""
        canonical = self.view.canonical
        return [leaf.name for leaf, trainable in zip(self.view, self.mask.trainable)
                if not trainable and leaf.kind == PARAM and canonical[leaf.name] == leaf.name]


def resolve(model: Any, plan: Plan | Mask | None = None,
            grouping: Grouping | None = None) -> Resolved:
    """Resolve ``model`` (and ``plan``): the one step every operation starts from.

    Wrappers are removed once here (``torch.compile``, ``nn.DataParallel``, DDP), so groups,
    selectors, reports and checkpoint names are those of the inner model. Nothing is computed
    twice: groups on first use (once per grouping), the mask on first use.

    Args:
        model: a PyTorch module (possibly wrapped) or a JAX model (Equinox, Flax NNX, pytree).
        plan: the plan to evaluate, or a ready :class:`Mask` of this model; None: the model's
            current state.
        grouping: how to build groups; its set fields override those of the plan's grouping.

    Returns:
        :class:`Resolved`.

    Raises:
        PlanError: ``plan`` is neither a Plan nor a Mask, or a Mask made for another model.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
        >>> r = fl.resolve(torch.nn.DataParallel(net), fl.Plan.lock(1))
        >>> r.model is net, r.groups.names, r.trainable_names()
        (True, ['0', '1', '2'], ['2.weight', '2.bias'])
    """
    from .._errors import PlanError
    from .backend import backend_for

    if plan is not None and not isinstance(plan, (Plan, Mask)):
        raise PlanError(f"expected a frostline Plan, a Mask or None, got a "
                        f"{type(plan).__name__}; build one with fl.Plan(), fl.Plan.lock(k) or "
                        "fl.Plan.load(path).")
    if grouping is not None and not isinstance(grouping, Grouping):
        raise PlanError(f"expected a frostline Grouping, got a {type(grouping).__name__}; "
                        "build one with fl.Grouping(coarse=..., tower=..., spec=[...]).")
    backend = backend_for(model)
    inner = backend.unwrap(model)
    with paused_gc():
        view = backend.view(inner)
    if isinstance(plan, Mask):
        check_mask_fits(plan, view)
        return Resolved(inner, model, backend, view, None, grouping or Grouping(), plan)
    return Resolved(inner, model, backend, view, plan, grouping or Grouping())


def check_mask_fits(mask: Mask, view: TreeView) -> None:
    """Raise :class:`PlanError` unless ``mask`` was made for a model with this view's leaves."""
    if tuple(mask.names) != view.names:
        from .._errors import PlanError

        missing = sorted(set(view.names) - set(mask.names))[:3]
        extra = sorted(set(mask.names) - set(view.names))[:3]
        raise PlanError(
            f"the mask does not fit this model: leaves missing from the mask {missing}, "
            f"names the model lacks {extra}. Build the mask from this model "
            "(fl.mask(model, plan)) or pass the plan itself."
        )
