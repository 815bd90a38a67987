"""Make gradients reach trainable layers above frozen ones under re-entrant checkpointing.

Re-entrant activation checkpointing (``torch.utils.checkpoint`` with ``use_reentrant=True``;
timm after ``timm.layers.set_reentrant_ckpt(True)``; transformers with
``gradient_checkpointing_kwargs={"use_reentrant": True}`` once its own input hook is removed)
runs each segment under ``no_grad`` and returns outputs that need gradients only if an *input*
did. When the layers below are frozen, the hidden states entering the first trainable block need
no gradient, so no trainable block inside a checkpointed segment gets one: only the head trains,
silently. Making the embedding's output require gradients (what transformers'
``enable_input_require_grads`` does) repairs it; non-re-entrant checkpointing (timm's and
transformers' default today) never had the problem.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map
from torch.utils.hooks import RemovableHandle

from .._errors import GroupError
from ..core.groups import Grouping
from ..core.resolve import resolve
from ._wrappers import unwrap


def enable_input_grads(model: nn.Module, module: nn.Module | str | None = None,
                       grouping: Grouping | None = None) -> list[RemovableHandle]:
    """Make the output of ``model``'s input layer require gradients (for re-entrant checkpoints).

    Args:
        model: the model.
        module: the layer whose output should require gradients (a module or its dotted path).
            Default: the model's ``get_input_embeddings()`` (transformers), else the modules of
            its first layer group (``fl.groups(model)[0]``, e.g. timm's ``patch_embed``).
        grouping: how to build the groups, for the default (:class:`~frostline.Grouping`).

    Returns:
        The forward-hook handles; call ``.remove()`` on each to undo.

    Raises:
        GroupError: no input layer could be found; pass ``module=`` explicitly.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
        >>> handles = fl.enable_input_grads(net, "0")
        >>> _ = net[0].requires_grad_(False)
        >>> net[0](torch.ones(1, 2)).requires_grad
        True
    """
    targets = _targets(unwrap(model), module, grouping)
    return [target.register_forward_hook(_outputs_require_grad) for target in targets]


def _targets(model: nn.Module, module: nn.Module | str | None,
             grouping: Grouping | None) -> list[nn.Module]:
    if isinstance(module, nn.Module):
        return [module]
    if isinstance(module, str):
        try:
            return [model.get_submodule(module)]
        except AttributeError:
            raise GroupError(
                f"'{module}' is not a submodule of {type(model).__name__}; pass the dotted path "
                "of the input layer as named_modules() prints it."
            ) from None
    embeddings = getattr(model, "get_input_embeddings", None)
    if callable(embeddings):
        found = embeddings()
        if isinstance(found, nn.Module):
            return [found]
    first = resolve(model, grouping=grouping).groups[0]
    named = dict(model.named_modules())
    targets = [named[path] for path in first.modules if path in named and path]
    if not targets:
        raise GroupError(
            f"the first layer group ({first.name}) of {type(model).__name__} holds no submodule "
            "whose output could require gradients; pass module= (the input layer) explicitly."
        )
    return targets


def _outputs_require_grad(module: nn.Module, args: Any, output: Any) -> None:
    def mark(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not (
                value.requires_grad):
            value.requires_grad_(True)
        return value

    tree_map(mark, output)
