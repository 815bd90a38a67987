"""PyTorch backend of frostline. Public names are re-exported from :mod:`frostline`."""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from ._batchnorm import freeze_stats, stats_frozen, unfreeze_stats
from ._groups import register_group_rule
from ._view import build_view


def trainable_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of ``model`` that require gradients, each shared tensor once.

    Example:
        >>> import torch, frostline as fl
        >>> m = torch.nn.Linear(2, 2)
        >>> _ = m.bias.requires_grad_(False)
        >>> [p.shape for p in fl.trainable_parameters(m)]
        [torch.Size([2, 2])]
    """
    return (p for p in model.parameters() if p.requires_grad)


def trainable_named_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs that require gradients, each shared tensor once."""
    return ((n, p) for n, p in model.named_parameters() if p.requires_grad)


__all__ = [
    "build_view",
    "freeze_stats",
    "register_group_rule",
    "stats_frozen",
    "trainable_named_parameters",
    "trainable_parameters",
    "unfreeze_stats",
]
