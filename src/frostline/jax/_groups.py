"""Layer groups of JAX models: explicit selectors, or stem / block stack / head."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .._errors import GroupError
from ..core.grouping import auto_groups, build_groups, groups_from_selectors
from ..core.groups import Groups
from ..core.leaves import TreeView
from ..core.selectors import Selector
from ._models import classes_of, is_nnx
from ._order import check_known_order
from ._view import dict_paths, is_linen_variables


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
    linen = is_linen_variables(model)
    found = _linen_variable_groups(model, view) if linen else auto_groups(
        view, None, classes_of(model))
    dicts = [] if is_nnx(model) else dict_paths(model)
    if dicts:
        # The collections of Linen variables are no layers: their order does not matter.
        check_known_order([p for p in dicts if p or not linen], found, view)
        found = replace(found, notes=(*found.notes, _DICT_ORDER))
    if example_input is None:
        return found
    note = "example_input is not traced for JAX models: groups follow definition order"
    return replace(found, notes=(*found.notes, note))


_DICT_ORDER = ("dict keys are ordered by number and role, never by the order a dict has "
               "(jit, optax and orbax hand dicts back sorted)")


def _linen_variable_groups(variables: Any, view: TreeView) -> Groups:
    """Groups of Linen variables: found over ``params``; the state of every other collection
    (``batch_stats.<module>.mean``) joins the group of its module's parameters."""
    params = TreeView(tuple(leaf for leaf in view if leaf.path[0] == "params"))
    found = auto_groups(params, None, classes_of(variables))
    group_of = {name: g.index for g in found for name in g.leaf_names}
    by_prefix: dict[tuple[str, ...], int] = {}
    for name, index in group_of.items():
        keys = view[name].path[1:]
        for cut in range(len(keys)):
            by_prefix.setdefault(keys[:cut], index)
    members = [list(g.leaf_names) for g in found]
    homeless = []
    for leaf in view:
        if leaf.path[0] == "params":
            continue
        keys = leaf.path[1:-1]
        for cut in range(len(keys), -1, -1):
            if keys[:cut] in by_prefix and (cut or len(members) == 1):
                members[by_prefix[keys[:cut]]].append(leaf.name)
                break
        else:
            homeless.append(leaf.name)
    notes = [*found.notes, "Linen variables: groups follow 'params'; the state of other "
             "collections joins the group of its module's parameters"]
    return build_groups(view, members, found.names, found.source, notes, homeless)
