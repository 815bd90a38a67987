"""Layer groups of PyTorch models: the model's own grouping, family rules, or automatic.

Sources, in order of trust: explicit selectors (``spec``), user rules, the family rules of the
integrations (OpenCLIP, Hugging Face transformers, torchvision, timm's ``group_matcher``), and
automatic detection (stem / trunk / head, ordered by execution when an example input is given).
With ``tower``, the groups of one part of the model are computed the same way and named from the
root; ``Groups.scope`` then tells :func:`frostline.lock` to freeze within that part only.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from .._errors import GroupError, closest
from ..core.backend import is_missing_dependency
from ..core.grouping import auto_groups, build_groups, groups_from_selectors
from ..core.groups import Groups
from ..core.leaves import TreeView
from ..core.selectors import Selector

GroupRule = Callable[..., "Groups | None"]

# Integration modules exposing ``groups(model, view, coarse=..., **options) -> Groups | None``
# (and optionally ``tower_groups(model, view, tower, **options)``); the first that recognises
# the model wins, so the most specific come first. Each imports its library only for its models.
_RULE_MODULES: list[str] = [
    "frostline.integrations.open_clip",
    "frostline.integrations.transformers",
    "frostline.integrations.torchvision",
    "frostline.integrations.timm",
]
_FAMILY_OPTIONS = ("head_group",)
_USER_RULES: list[GroupRule] = []


def register_group_rule(rule: GroupRule) -> None:
    """Register ``rule(model, view, coarse=..., **options) -> Groups | None``, tried first."""
    _USER_RULES.insert(0, rule)


def torch_groups(model: nn.Module, view: TreeView, *, coarse: bool = False,
                 spec: Sequence[Selector | str] | None = None,
                 names: Sequence[str] | None = None, example_input: Any = None,
                 auto: bool = False, tower: str | None = None, **options: Any) -> Groups:
    """The layer groups of a PyTorch model, input first.

    Args:
        coarse: coarser groups where the model's own grouping offers them (timm's ``coarse``).
        spec: explicit groups, one selector each (overrides everything else).
        names: names for explicit groups.
        example_input: traced on the meta device to order automatic groups by execution.
        auto: skip the model's own grouping and family rules; detect automatically.
        tower: ``"image"`` / ``"text"`` for a CLIP model, or any module path: the groups of that
            part only, named from the root, with ``Groups.scope`` set to it.
        **options: family options (``head_group``: an OpenCLIP timm tower's projection head as
            the top group).

    Raises:
        GroupError: an unknown option or tower, or a trace of ``example_input`` that failed.
    """
    unknown = sorted(set(options) - set(_FAMILY_OPTIONS))
    if unknown:
        raise GroupError(
            f"unknown group option(s) {unknown}; the options are coarse, spec, names, "
            f"example_input, auto, tower and {', '.join(_FAMILY_OPTIONS)}."
        )
    if spec is not None:
        return groups_from_selectors(view, spec, names)
    if tower is not None:
        return _tower_groups(model, view, tower, coarse=coarse, example_input=example_input,
                             auto=auto, **options)
    if not auto:
        for rule in [*_USER_RULES, *_builtin("groups")]:
            found = rule(model, view, coarse=coarse, **options)
            if found is not None:
                return found
    order = None
    if example_input is not None:
        from ._trace import execution_order

        order = execution_order(model, example_input)
    return auto_groups(view, order)


def submodule_groups(model: nn.Module, view: TreeView, path: str, **options: Any) -> Groups:
    """The groups of the submodule at ``path``, renamed from the root of ``model``.

    Leaf and group names get the ``path.`` prefix; the scope becomes ``path`` (or the
    submodule's own scope, prefixed).

    Example:
        >>> from frostline.torch._view import build_view
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(*[nn.Linear(2, 2) for _ in "abc"]))
        >>> found = submodule_groups(net, build_view(net), "1")
        >>> found.scope, found.names
        (('1',), ['1.0', '1.1', '1.2'])
    """
    from ._view import build_view

    sub = model.get_submodule(path)
    inner = torch_groups(sub, build_view(sub), **options)
    return rebase(view, inner, path)


def rebase(view: TreeView, inner: Groups, path: str) -> Groups:
    """Name the groups ``inner`` of the submodule at ``path`` from the root of ``view``."""
    prefix = path + "."
    members = [[prefix + name for name in group.leaf_names] for group in inner]
    names = [prefix + group.name for group in inner]
    scope = tuple(prefix + s for s in inner.scope) or (path,)
    notes = (*inner.notes, f"groups of the submodule '{path}', named from the root")
    return build_groups(view, members, names, inner.source, notes,
                        [prefix + name for name in inner.unmatched], scope=scope)


def _tower_groups(model: nn.Module, view: TreeView, tower: str, **options: Any) -> Groups:
    for rule in _builtin("tower_groups"):
        found = rule(model, view, tower, **options)
        if found is not None:
            return found
    paths = [p for p, _ in model.named_modules() if p]
    if tower not in paths:
        hint = closest(tower, paths)
        raise GroupError(
            f"unknown tower {tower!r} for a {type(model).__name__}: expected 'image' or 'text' "
            "for a CLIP model, or a module path of this model"
            + (f" (closest: {', '.join(hint)})" if hint else "") + "."
        )
    return submodule_groups(model, view, tower, **options)


def _builtin(attr: str) -> list[GroupRule]:
    """The group rules of the integrations. Each imports its library only for its own models;
    a missing third-party package skips the integration, an error inside one raises."""
    rules = []
    for module_path in _RULE_MODULES:
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError as exc:
            if not is_missing_dependency(exc, module_path):
                raise
            continue
        rule = getattr(module, attr, None)
        if rule is not None:
            rules.append(rule)
    return rules
