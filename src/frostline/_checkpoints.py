"""Trainable-only checkpoints for any supported framework (the backend is picked per model).

The file format and its checks are one (:mod:`frostline.core.checkpoint`); the PyTorch backend
(:mod:`frostline.torch._checkpoint`) and the JAX backend (:mod:`frostline.jax._checkpoint`)
read and write the tensors.
"""

from __future__ import annotations

import os
from typing import Any

from .core.backend import backend_for
from .core.groups import Grouping


def save_trainable(model: Any, path: str | os.PathLike[str], plan: Any = None,
                   grouping: Grouping | None = None) -> Any:
    """Write what ``model`` trains (under ``plan``) to a safetensors file, atomically.

    PyTorch: see :func:`frostline.torch._checkpoint.save_trainable` (the plan defaults to the
    one applied). JAX (Equinox, Flax NNX, pytrees): the plan is required, see
    :func:`frostline.jax._checkpoint.save_trainable`.
    """
    return _module(model).save_trainable(model, path, plan, grouping)


def load_trainable(model: Any, path: str | os.PathLike[str], strict: bool = True, *,
                   check_base: bool = True, grouping: Grouping | None = None) -> Any:
    """Restore a checkpoint of :func:`save_trainable` onto the base model.

    PyTorch: in place, returns a ``CheckpointInfo``. JAX: returns the restored model (NNX: the
    module itself, restored in place).
    """
    return _module(model).load_trainable(model, path, strict, check_base=check_base,
                                         grouping=grouping)


def _module(model: Any) -> Any:
    if backend_for(model).name == "jax":
        from .jax import _checkpoint
    else:
        from .torch import _checkpoint
    return _checkpoint
