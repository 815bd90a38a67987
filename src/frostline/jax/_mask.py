"""Turning a plan (or a ready mask) into the set of trainable leaf names of a JAX model."""

from __future__ import annotations

from typing import Any

from .._errors import PlanError
from ..core.leaves import PARAM, TreeView
from ..core.mask import Mask
from ..core.plan import Plan
from ..core.resolve import check_mask_fits
from ._models import view_of


def resolve_mask(model: Any, plan: Plan | Mask | None, view: TreeView | None = None,
                 **group_options: Any) -> Mask:
    """The :class:`Mask` of ``plan`` on ``model``; ``None`` means every parameter trains.

    Raises:
        PlanError: a ready :class:`Mask` was made for another model (its names differ).
    """
    view = view_of(model) if view is None else view
    if plan is None:
        return Mask(view.names, tuple(leaf.kind == PARAM for leaf in view))
    if isinstance(plan, Mask):
        check_mask_fits(plan, view)
        return plan
    if isinstance(plan, Plan):
        from ..core.groups import Grouping
        from ..core.resolve import resolve

        return resolve(model, plan, Grouping(**group_options) if group_options else None).mask
    raise PlanError(
        f"expected a frostline Plan, a Mask or None, got {type(plan).__name__}; build one with "
        "fl.Plan().freeze(...) or fl.Plan.lock(k)."
    )


def trainable_names(view: TreeView, mask: Mask) -> frozenset[str]:
    """Names of the parameters that train: buffers (statistics, RNG state) never take gradients."""
    kinds = {leaf.name: leaf.kind for leaf in view}
    return frozenset(name for name, trainable in mask if trainable and kinds[name] == PARAM)
