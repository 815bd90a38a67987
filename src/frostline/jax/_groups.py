"""Layer groups of JAX models: explicit selectors, or stem / block stack / head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .._errors import GroupError
from ..core.grouping import auto_groups, groups_from_selectors
from ..core.groups import Groups
from ..core.leaves import TreeView
from ..core.selectors import Selector
from ._models import classes_of


def jax_groups(model: Any, view: TreeView, *, coarse: bool = False,
               spec: Sequence[Selector | str] | None = None,
               names: Sequence[str] | None = None, example_input: Any = None,
               auto: bool = False, **options: Any) -> Groups:
    """The layer groups of an Equinox, Flax NNX or pytree model, input first.

    A list or tuple of same-type modules (in a plain pytree: a container of same-type dicts,
    such as Flax Linen's ``params``) is the block stack; leaves before it form ``stem`` and
    after it ``head``. JAX models carry no grouping of their own, so ``coarse`` and ``auto``
    change nothing; leaves are in definition order, which ``example_input`` does not change
    (a note in ``Groups.notes`` says so).

    Args:
        spec: explicit groups, one selector each (overrides automatic detection).
        names: names for explicit groups.

    Raises:
        GroupError: an option the PyTorch families take (``tower``, ``head_group``) was given.
    """
    if options:
        raise GroupError(
            f"group option(s) {sorted(options)} apply to PyTorch model families only; for a "
            "JAX model use spec=[...] (one selector per group) to choose the groups."
        )
    if spec is not None:
        return groups_from_selectors(view, spec, names)
    found = auto_groups(view, None, classes_of(model))
    if example_input is None:
        return found
    note = "example_input is not traced for JAX models: groups follow definition order"
    return replace(found, notes=(*found.notes, note))
