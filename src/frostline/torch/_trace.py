"""Execution order of a model's modules, found by running an example input on the meta device.

Parameters and buffers are swapped for meta tensors through ``torch.func.functional_call``, so
the model is neither copied nor computed on; only the order in which modules first run is kept.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_map

from .._errors import GroupError


def execution_order(model: nn.Module, example_input: Any) -> dict[str, int]:
    """Map each module path to the rank at which it first ran on ``example_input``.

    ``example_input`` is a tensor, a tuple of positional arguments, or a dict of keyword
    arguments. Tensors are moved to the meta device (shapes and dtypes are all that matter).

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
        >>> execution_order(m, torch.zeros(1, 4))
        {'': 0, '0': 1, '1': 2}
    """
    order: dict[str, int] = {}
    handles = []
    for path, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(_recorder(order, path)))
    meta_state = {
        name: torch.empty_like(t, device="meta")
        for name, t in [*model.named_parameters(), *model.named_buffers()]
    }
    args, kwargs = _split_input(tree_map(_to_meta, example_input))
    try:
        with torch.no_grad():
            torch.func.functional_call(model, meta_state, args, kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported the same way
        raise GroupError(
            f"tracing the example input on the meta device failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); pass an input the model accepts "
            "(a tensor, a tuple of arguments or a dict of keyword arguments), or omit it to "
            "order groups by definition."
        ) from None
    finally:
        for handle in handles:
            handle.remove()
    return order


def _recorder(order: dict[str, int], path: str):
    def hook(module: nn.Module, args: Any) -> None:
        order.setdefault(path, len(order))

    return hook


def _to_meta(value: Any) -> Any:
    return value.to("meta") if isinstance(value, torch.Tensor) else value


def _split_input(example: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example, dict):
        return (), example
    if isinstance(example, tuple):
        return example, {}
    return (example,), {}
