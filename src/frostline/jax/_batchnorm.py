"""Keeping the statistics of frozen BatchNorms fixed: inference mode for the frozen groups.

Equinox keeps BatchNorm statistics in an ``eqx.nn.State`` outside the model; they stop moving
when the layer's ``inference`` flag is set. Flax NNX keeps them as ``BatchStat`` variables;
they stop moving when ``use_running_average`` is True.
"""

from __future__ import annotations

from typing import Any

import jax

from .._errors import BackendError
from ..core.leaves import Owner, TreeView
from ..core.mask import Mask
from ..core.norms import is_batchnorm
from ._models import is_nnx, modules_of
from ._view import dotted


def frozen_batchnorms(view: TreeView, mask: Mask) -> list[str]:
    """Paths of the BatchNorms every leaf of which (parameters and statistics) the mask freezes."""
    state: dict[str, bool] = {}
    for leaf in view:
        if leaf.owners and is_batchnorm(leaf.owners[-1]):
            path = leaf.module_path
            state[path] = state.get(path, True) and not mask[leaf.name]
    return [path for path, frozen in state.items() if frozen]


def in_inference(module: Any) -> bool:
    """True when a BatchNorm module uses (and no longer updates) its running statistics."""
    return bool(getattr(module, "use_running_average", False) or getattr(module, "inference",
                                                                          False))


def batchnorms_in_inference(model: Any) -> set[str]:
    return {path for path, module in modules_of(model).items()
            if is_batchnorm(Owner(path, type(module))) and in_inference(module)}


def set_inference(model: Any, paths: list[str]) -> Any:
    """Put the BatchNorms at ``paths`` in inference mode.

    Returns a new Equinox model (the input is unchanged); an NNX model is changed in place and
    returned.

    Raises:
        BackendError: a BatchNorm class has neither ``inference`` nor ``use_running_average``.
    """
    targets = set(paths)
    if is_nnx(model):
        modules = modules_of(model)
        for path in paths:
            _require_flag(modules[path], "use_running_average", path)
            modules[path].use_running_average = True
        return model
    import equinox as eqx

    def swap(key_path: Any, node: Any) -> Any:
        path = dotted(key_path)
        if path not in targets:
            return node
        _require_flag(node, "inference", path)
        return eqx.tree_at(lambda bn: bn.inference, node, True)

    return jax.tree_util.tree_map_with_path(
        swap, model, is_leaf=lambda node: is_batchnorm(Owner("", type(node))))


def _require_flag(module: Any, flag: str, path: str) -> None:
    if not hasattr(module, flag):
        raise BackendError(
            f"the BatchNorm at '{path}' ({type(module).__name__}) has no '{flag}' flag, so its "
            "statistics cannot be fixed; frostline supports eqx.nn.BatchNorm and nnx.BatchNorm."
        )
