"""timm: layer groups from the model's own ``group_matcher``, exactly as timm groups parameters."""

from __future__ import annotations

import re
from typing import Any

from ..core.grouping import attach_buffers, build_groups
from ..core.groups import Groups
from ..core.leaves import TreeView


def groups(model: Any, view: TreeView, *, coarse: bool = False, **options: Any) -> Groups | None:
    """timm's grouping of ``model`` (``group_parameters(model, model.group_matcher(coarse))``).

    Returns None when the model has no ``group_matcher``. Parameters that no matcher rule names
    go to the last group, as timm does; they are listed in ``Groups.unmatched``.
    """
    matcher_fn = getattr(model, "group_matcher", None)
    if not callable(matcher_fn):
        return None
    from timm.models import group_parameters

    matcher = matcher_fn(coarse=coarse)
    grouping = group_parameters(model, matcher)
    param_groups = [list(names) for _, names in sorted(grouping.items())]
    members = attach_buffers(view, param_groups)
    unmatched = _unmatched(matcher, [n for names in param_groups for n in names])
    n = len(members)
    notes = [f"timm group_matcher(coarse={coarse}) of {type(model).__name__}: {n} groups"]
    if unmatched:
        notes.append(
            f"{len(unmatched)} parameters match no group_matcher rule and sit in the last "
            "group, as timm puts them"
        )
    return build_groups(view, members, None, "timm group_matcher", notes, unmatched)


def _unmatched(matcher: Any, names: list[str]) -> list[str]:
    """Names none of the matcher's regexes accept (only knowable for dict matchers)."""
    if not isinstance(matcher, dict):
        return []
    patterns = []
    for spec in matcher.values():
        if isinstance(spec, str):
            patterns.append(re.compile(spec))
        else:
            patterns.extend(re.compile(item[0] if isinstance(item, tuple) else item)
                            for item in spec)
    return [name for name in names if not any(p.match(name) for p in patterns)]
