"""The sweep target for ``frostline sweep MODEL --data FILE.npz``: the user's model and data."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..demo._data import Task
from ._data import MAX_BYTES, DataError, load_npz
from ._models import load_model


def own_task(spec: str, path: str, shift: str, seed: int = 0, max_bytes: int = MAX_BYTES
             ) -> tuple[Task, Callable[[], Any]]:
    """The data of ``path`` as a sweep task, and a function returning copies of the model.

    The model is built once, under ``seed`` (weights a factory initialises at random come out
    the same on every run); every setting trains a deep copy, so all start from the same
    weights. Its outputs must cover the labels (the head is not replaced). ``max_bytes``
    bounds the arrays of the file (see :func:`load_npz`).

    Raises:
        DataError: the file is not a valid data set, or the model's outputs do not fit it.
        ModelSpecError: the spec names no model.
    """
    data = load_npz(path, max_bytes)
    torch.manual_seed(seed)
    model = load_model(spec)
    if not isinstance(model, torch.nn.Module):
        raise DataError(f"{spec} is a {type(model).__name__}; frostline sweep trains PyTorch "
                        "models (torch.nn.Module).")
    train = (torch.from_numpy(data.x_train), torch.from_numpy(data.y_train))
    val = (torch.from_numpy(data.x_val), torch.from_numpy(data.y_val))
    _check_outputs(model, spec, path, train[0][:2], data.num_classes)
    task = Task(Path(path).stem, f"{spec} on {path} ({data.num_classes} classes)", train, val,
                data.num_classes, shift, new_head=True)
    return task, lambda: copy.deepcopy(model)


def _check_outputs(model: torch.nn.Module, spec: str, path: str, sample: torch.Tensor,
                   num_classes: int) -> None:
    """Refuse a model whose logits do not fit the inputs and labels, before any training."""
    probe = copy.deepcopy(model).eval()
    try:
        with torch.no_grad():
            logits = probe(sample)
    except (RuntimeError, ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{spec} cannot run on the inputs of {path} (examples of shape "
                        f"{tuple(sample.shape[1:])}): {first}; reshape x_train / x_val to what "
                        "the model takes.") from None
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[1] < num_classes:
        found = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise DataError(f"{spec} must return logits of shape (N, classes) with at least "
                        f"{num_classes} classes (the labels of {path} go up to "
                        f"{num_classes - 1}); it returned {found}. Build the model with a "
                        "head of that size.")
