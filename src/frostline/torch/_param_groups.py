"""Optimizer parameter groups: trainable parameters only, selective weight decay, layer-wise decay.

The grouping follows timm's ``create_optimizer_v2``: with ``layer_decay`` every parameter of layer
group ``i`` (of ``n``) gets ``lr_scale = layer_decay ** (n - 1 - i)``, computed over *all* groups
of the model, so frozen parameters never shift the scales of the trainable ones; they are simply
left out. Unlike timm, each group also carries ``lr = lr * lr_scale``, so plain PyTorch optimizers
and schedulers (which ignore ``lr_scale``) train with the decayed rates.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Collection
from typing import Any

from torch import nn

from .._errors import PlanError, SelectorError
from ..core.groups import Grouping, Groups
from ..core.leaves import PARAM, Leaf, TreeView
from ..core.norms import held_by_norm
from ..core.resolve import Resolved, resolve
from ..core.selectors import MatchContext, Selector, as_selector, explain_empty, where


class _DefaultNoDecay:
    """Marker for the default ``no_decay``: biases, norm parameters, 1-d parameters and the
    names the model's own ``no_weight_decay()`` lists (timm's convention)."""

    def __repr__(self) -> str:
        return "DEFAULT_NO_DECAY"


DEFAULT_NO_DECAY = _DefaultNoDecay()


def _one_dim_bias_or_norm(leaf: Leaf) -> bool:
    return len(leaf.shape) <= 1 or leaf.path[-1] == "bias" or held_by_norm(leaf)


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0,
                 layer_decay: float | None = None,
                 no_decay: Selector | str | None | _DefaultNoDecay = DEFAULT_NO_DECAY, *,
                 min_scale: float = 0.0, groups: Groups | None = None,
                 grouping: Grouping | None = None) -> list[dict[str, Any]]:
    """Optimizer parameter groups holding only the trainable parameters of ``model``.

    Args:
        model: the model, already frozen as wanted (``requires_grad`` tells what trains).
        lr: the base learning rate (of the head, when ``layer_decay`` is given).
        weight_decay: weight decay of the parameters that decay.
        layer_decay: layer-wise learning-rate decay: group ``i`` of ``n`` (``fl.groups(model)``)
            gets ``lr_scale = layer_decay ** (n - 1 - i)``; None: every scale is 1.
        no_decay: parameters without weight decay: a selector or selector string, None for
            "every parameter decays", or the default (biases, norm parameters, 1-d parameters, and
            the names the model's ``no_weight_decay()`` returns, as timm excludes them).
        min_scale: lower bound of ``lr_scale`` (timm's ``layer_decay_min_scale``).
        groups: layer groups to decay over and that ``group:`` selectors in ``no_decay`` refer
            to (default ``fl.groups(model, grouping)``).
        grouping: how to build those groups (:class:`~frostline.Grouping`).

    Returns:
        A list of dicts for ``torch.optim`` with ``params``, ``lr`` (``lr * lr_scale``), the
        same as ``initial_lr`` (what LR schedulers start from; ``ReduceLROnPlateau`` records
        none, and :func:`~frostline.extend_scheduler` reads it), ``lr_scale``, ``weight_decay``
        and a readable ``name``; one per (layer group, decay) with ``layer_decay``, else at
        most two (``no_decay``, ``decay``).

    Raises:
        PlanError: no parameter is trainable, or a rate is out of range.
        SelectorError: a custom ``no_decay`` selector matches nothing.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(3)])
        >>> _ = fl.lock(net, unlocked_groups=2)
        >>> [(g["name"], g["lr"]) for g in fl.param_groups(net, lr=1.0, weight_decay=0.1,
        ...                                                layer_decay=0.5)]
        [('1/no_decay', 0.5), ('1/decay', 0.5), ('2/no_decay', 1.0), ('2/decay', 1.0)]
    """
    out = build_param_groups(resolve(model, grouping=grouping), lr, weight_decay=weight_decay,
                             layer_decay=layer_decay, no_decay=no_decay, min_scale=min_scale,
                             groups=groups)
    if not out:
        raise PlanError(
            "no parameter of the model is trainable, so there is nothing to optimize; unfreeze "
            "something first (e.g. fl.lock(model, unlocked_groups=1))."
        )
    return out


def build_param_groups(resolved: Resolved, lr: float, *, weight_decay: float = 0.0,
                       layer_decay: float | None = None,
                       no_decay: Selector | str | None | _DefaultNoDecay = DEFAULT_NO_DECAY,
                       min_scale: float = 0.0, groups: Groups | None = None,
                       only: Collection[str] | None = None) -> list[dict[str, Any]]:
    """:func:`param_groups` of a resolved model, restricted to the parameter names in ``only``
    (an empty result allowed). Groups default to ``resolved.groups``, computed only if needed."""
    _check_rates(lr, weight_decay, layer_decay, min_scale)
    model, view = resolved.model, resolved.view
    group_source: Groups | Callable[[], Groups] = (
        groups if groups is not None else (lambda: resolved.groups))
    if groups is None and layer_decay is not None:
        groups = resolved.groups
    excluded = _no_decay_names(model, view, no_decay, group_source)
    scales = _layer_scales(view, groups, layer_decay, min_scale)
    buckets: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad or (only is not None and name not in only):
            continue
        index, scale = scales.get(name, (0, 1.0))
        decays = bool(weight_decay) and name not in excluded
        key = (index, decays)
        if key not in buckets:
            prefix = f"{groups[index].name}/" if layer_decay is not None and groups else ""
            buckets[key] = {
                "params": [],
                "lr": lr * scale,
                "initial_lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": weight_decay if decays else 0.0,
                "name": prefix + ("decay" if decays else "no_decay"),
            }
        buckets[key]["params"].append(param)
    return [buckets[key] for key in sorted(buckets)]


def _check_rates(lr: float, weight_decay: float, layer_decay: float | None,
                 min_scale: float) -> None:
    checks = [("lr", lr, lambda v: v >= 0), ("weight_decay", weight_decay, lambda v: v >= 0),
              ("min_scale", min_scale, lambda v: v >= 0)]
    if layer_decay is not None:
        checks.append(("layer_decay", layer_decay, lambda v: v > 0))
    for label, value, ok in checks:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or not ok(value):
            raise PlanError(
                f"{label} must be a finite non-negative number (layer_decay: positive), got "
                f"{value!r}."
            )


def _no_decay_names(model: nn.Module, view: TreeView,
                    no_decay: Selector | str | None | _DefaultNoDecay,
                    groups: Groups | Callable[[], Groups]) -> set[str]:
    if no_decay is None:
        return set()
    ctx = MatchContext(view, groups)
    if isinstance(no_decay, _DefaultNoDecay):
        selector: Selector = where(_one_dim_bias_or_norm, "bias, norm or 1-d")
        patterns = _model_no_weight_decay(model)
        names = {leaf.name for leaf, hit in zip(view, selector.select(ctx)) if hit}
        names |= {leaf.name for leaf in view
                  if any(fnmatch.fnmatch(leaf.name, p) for p in patterns)}
        return names
    selector = as_selector(no_decay)
    hits = selector.select(ctx)
    if not any(hit for leaf, hit in zip(view, hits) if leaf.kind == PARAM):
        raise SelectorError(
            f"no_decay selector {selector} matches no parameter: "
            f"{explain_empty(selector, ctx)}. Fix the selector, or pass no_decay=None to decay "
            "every parameter."
        )
    return {leaf.name for leaf, hit in zip(view, hits) if hit}


def _model_no_weight_decay(model: nn.Module) -> set[str]:
    """Name patterns the model itself exempts from weight decay (timm's ``no_weight_decay``)."""
    method = getattr(model, "no_weight_decay", None)
    return set(method()) if callable(method) else set()


def _layer_scales(view: TreeView, groups: Groups | None, layer_decay: float | None,
                  min_scale: float) -> dict[str, tuple[int, float]]:
    """Group index and lr scale of every leaf; leaves in no group take the head's, as timm."""
    if layer_decay is None or groups is None:
        return {}
    top = len(groups) - 1
    out = {}
    for leaf in view:
        index = groups.index_of(leaf.name)
        index = top if index is None else index
        out[leaf.name] = (index, max(min_scale, layer_decay ** (top - index)))
    return out
