"""The model inside the wrappers PyTorch puts around it, so names are always the inner model's.

``torch.compile`` (``OptimizedModule._orig_mod``), ``nn.DataParallel`` and
``DistributedDataParallel`` (``.module``) add a prefix to every parameter name; FSDP2's
``fully_shard`` changes the module in place and keeps its names, so it needs nothing here.
The parameters are the same objects, so freezing the inner model freezes the wrapped one.
"""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """Peel ``torch.compile``, ``DataParallel`` and DDP wrappers off ``model`` (any nesting).

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(2, 2)
        >>> unwrap(torch.nn.DataParallel(torch.compile(net))) is net
        True
    """
    while True:
        inner = _inner(model)
        if inner is None:
            return model
        model = inner


def is_wrapper(model: nn.Module) -> bool:
    """True for a module that only wraps another one (see :func:`unwrap`)."""
    return _inner(model) is not None


def _inner(model: nn.Module) -> nn.Module | None:
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    if isinstance(model, (DataParallel, DistributedDataParallel)):
        return model.module
    orig = model.__dict__.get("_modules", {}).get("_orig_mod")
    if type(model).__name__ == "OptimizedModule" and isinstance(orig, nn.Module):
        return orig
    return None
