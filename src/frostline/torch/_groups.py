"""Layer groups of PyTorch models: the model's own grouping, family rules, or automatic."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from ..core.grouping import auto_groups, groups_from_selectors
from ..core.groups import Groups
from ..core.leaves import TreeView
from ..core.selectors import Selector

GroupRule = Callable[..., "Groups | None"]

# Integration modules exposing ``groups(model, view, coarse=...) -> Groups | None``; the first
# that recognises the model wins. Each imports its library only for models of that library.
_RULE_MODULES: list[str] = [
    "frostline.integrations.timm",
]
_USER_RULES: list[GroupRule] = []


def register_group_rule(rule: GroupRule) -> None:
    """Register ``rule(model, view, coarse=...) -> Groups | None``, tried before built-in rules."""
    _USER_RULES.insert(0, rule)


def torch_groups(model: nn.Module, view: TreeView, *, coarse: bool = False,
                 spec: Sequence[Selector | str] | None = None,
                 names: Sequence[str] | None = None, example_input: Any = None,
                 auto: bool = False) -> Groups:
    """The layer groups of a PyTorch model, input first.

    Args:
        coarse: coarser groups where the model's own grouping offers them (timm's ``coarse``).
        spec: explicit groups, one selector each (overrides everything else).
        names: names for explicit groups.
        example_input: traced on the meta device to order automatic groups by execution.
        auto: skip the model's own grouping and family rules; detect automatically.
    """
    if spec is not None:
        return groups_from_selectors(view, spec, names)
    if not auto:
        for rule in [*_USER_RULES, *_builtin_rules()]:
            found = rule(model, view, coarse=coarse)
            if found is not None:
                return found
    order = None
    if example_input is not None:
        from ._trace import execution_order

        order = execution_order(model, example_input)
    return auto_groups(view, order)


def _builtin_rules() -> list[GroupRule]:
    rules = []
    for module_path in _RULE_MODULES:
        try:
            rules.append(importlib.import_module(module_path).groups)
        except ImportError:
            continue
    return rules
