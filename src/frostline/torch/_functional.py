"""Functional training with PyTorch: split a module into trainable and frozen tensors.

``partition`` gives two ``{name: tensor}`` dicts; ``functional_call`` runs the module on them
through ``torch.func.functional_call``, so ``torch.func.grad`` differentiates the trainable dict
only and frozen tensors never get a gradient (the PyTorch side of Equinox's partition/combine).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .._errors import PlanError
from ..core.mask import Mask


def partition_module(model: nn.Module, mask: Mask | None = None
                     ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split ``model`` into ``(trainable, frozen)`` dicts of its tensors by name.

    Args:
        model: the module (left unchanged: the mask is read, not applied).
        mask: what trains (``fl.resolve(model, plan).mask``); None: ``requires_grad`` now.

    Returns:
        ``trainable``: the trainable parameters; ``frozen``: the frozen parameters and every
        buffer. Each shared tensor appears once, under its first name. The values are the
        model's own tensors (no copies).

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Linear(2, 2)
        >>> trainable, frozen = fl.partition(net, fl.Plan().freeze("name:bias"))
        >>> list(trainable), list(frozen)
        (['weight'], ['bias'])
    """
    params = dict(model.named_parameters())
    if mask is None:
        is_trainable = {n: p.requires_grad for n, p in params.items()}
    else:
        is_trainable = mask.as_dict()
    trainable = {n: p for n, p in params.items() if is_trainable.get(n, True)}
    frozen = {n: p for n, p in params.items() if n not in trainable}
    frozen.update(dict(model.named_buffers()))
    return trainable, frozen


def combine_parts(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict[str, Any]:
    """Merge the two dicts :func:`partition_module` made into one ``{name: tensor}`` dict.

    Raises:
        PlanError: a name is in both dicts (they must be disjoint).

    Example:
        >>> import torch, frostline as fl
        >>> sorted(fl.combine({"weight": torch.ones(1)}, {"bias": torch.zeros(1)}))
        ['bias', 'weight']
    """
    both = sorted(set(trainable) & set(frozen))
    if both:
        raise PlanError(
            f"{len(both)} names are both trainable and frozen (first: '{both[0]}'); the two "
            "halves of fl.partition are disjoint, so pass each tensor in one of them only."
        )
    return {**frozen, **trainable}


def functional_call(model: nn.Module, trainable: Mapping[str, torch.Tensor],
                    frozen: Mapping[str, torch.Tensor], args: Any = (),
                    kwargs: Mapping[str, Any] | None = None) -> Any:
    """Run ``model`` with the tensors of ``trainable`` and ``frozen`` in place of its own.

    Use it inside ``torch.func.grad`` with ``trainable`` as the differentiated argument: only
    trainable tensors get gradients, and ``frozen`` ones are never touched.

    Args:
        model: the module.
        trainable: ``{name: tensor}`` of the trainable tensors (first half of ``fl.partition``).
        frozen: ``{name: tensor}`` of the frozen parameters and buffers (second half).
        args: one positional argument, or a tuple of them.
        kwargs: keyword arguments.

    Raises:
        PlanError: a name is in both dicts, or names no tensor of the model.

    Example:
        >>> import torch, frostline as fl
        >>> net = torch.nn.Linear(2, 1)
        >>> trainable, frozen = fl.partition(net, fl.Plan().freeze("name:bias"))
        >>> loss = lambda t, x: fl.functional_call(net, t, frozen, (x,)).sum()
        >>> sorted(torch.func.grad(loss)(trainable, torch.ones(3, 2)))
        ['weight']
    """
    combine_parts(trainable, frozen)
    known = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    known |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    unknown = sorted((set(trainable) | set(frozen)) - known)
    if unknown:
        from .._errors import closest

        raise PlanError(
            f"'{unknown[0]}' names no parameter or buffer of {type(model).__name__} (closest: "
            f"{closest(unknown[0], known)}); pass the dicts fl.partition made for this model."
        )
    if not isinstance(args, tuple):
        args = (args,)
    return torch.func.functional_call(model, (dict(trainable), dict(frozen)), args,
                                      dict(kwargs or {}))
